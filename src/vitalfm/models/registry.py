"""The model families a config's ``family:`` may name, each registered once with its traits.

Every family is one explicit :func:`register` call at the end of this module: its name (the
config's ``family:`` value), where its :class:`~vitalfm.models.base.Forecaster` lives (a
``"module:Class"`` string, imported only when a job needs the model, so that parsing the
Snakefile loads no torch) and its traits, which the study's rules and the reports ask for
instead of naming families:

- ``baseline``: built from a seeded random init (``source: {scratch: true}``,
  :meth:`Forecaster.from_scratch`), not pretrained; the family lives in
  :mod:`vitalfm.models.baselines`;
- ``has_parameters``: False for a family with nothing to train (persistence), which runs
  only ``zero_shot`` and one replicate, since every seed forecasts the same;
- ``naive_reference``: the naive forecast that the persistence-to-oracle gap starts from (at
  most one family).

Adding a family: write its Forecaster (a module or package under ``src/vitalfm/models/``, or
``src/vitalfm/models/baselines/`` for a baseline) and add its ``register(...)`` line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitalfm.errors import ConfigError

if TYPE_CHECKING:
    from vitalfm.models.base import Forecaster


@dataclass(frozen=True)
class Family:
    """One registered model family: its name, its Forecaster's location and its traits."""

    name: str
    #: ``"package.module:Class"`` of the family's Forecaster (imported lazily).
    forecaster: str
    baseline: bool = False
    has_parameters: bool = True
    naive_reference: bool = False

    @property
    def pretrained(self) -> bool:
        """Loaded from released weights or a stand-in (every family that is not a baseline)."""
        return not self.baseline

    def forecaster_class(self) -> type[Forecaster]:
        """The family's Forecaster class (imports its module, and with it torch)."""
        module_name, _, class_name = self.forecaster.partition(":")
        forecaster = getattr(importlib.import_module(module_name), class_name)
        if getattr(forecaster, "family", None) != self.name:
            raise TypeError(
                f"{self.forecaster} is registered as family {self.name!r} but declares "
                f"family = {getattr(forecaster, 'family', None)!r}"
            )
        return forecaster


class FamilyRegistry:
    """Families by name, in registration order; a name can be registered only once."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}

    def register(
        self,
        name: str,
        forecaster: str,
        *,
        baseline: bool = False,
        has_parameters: bool = True,
        naive_reference: bool = False,
    ) -> Family:
        """Add a family (ValueError for a duplicate, a malformed name or inconsistent traits)."""
        if name in self._families:
            raise ValueError(
                f"model family {name!r} is already registered "
                f"(by {self._families[name].forecaster})"
            )
        if not (name.isidentifier() and name == name.lower()):
            raise ValueError(f"model family name {name!r} is not a lower-case identifier")
        module_name, colon, class_name = forecaster.partition(":")
        if not (colon and module_name and class_name.isidentifier()):
            raise ValueError(f"family {name!r}: forecaster {forecaster!r} is not 'module:Class'")
        if not has_parameters and not baseline:
            raise ValueError(f"family {name!r}: a pretrained family has parameters")
        if naive_reference:
            taken = [f.name for f in self._families.values() if f.naive_reference]
            if taken:
                raise ValueError(
                    f"family {name!r}: {taken[0]} is already the naive reference (one only)"
                )
        family = Family(name, forecaster, baseline, has_parameters, naive_reference)
        self._families[name] = family
        return family

    def __iter__(self) -> Iterator[Family]:
        return iter(self._families.values())

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def names(self) -> tuple[str, ...]:
        return tuple(self._families)

    def get(self, name: str) -> Family:
        """The family called ``name``; ConfigError naming the registered ones otherwise."""
        family = self._families.get(name)
        if family is None:
            raise ConfigError(f"unknown model family {name!r}", self.known_hint())
        return family

    def known_hint(self) -> str:
        """How to fix an unknown family name: the registered ones, and where to add one."""
        return (
            f"use one of {', '.join(sorted(self._families))} (or register a new family in "
            "src/vitalfm/models/registry.py)"
        )


FAMILIES = FamilyRegistry()
register = FAMILIES.register


def get_family(name: str) -> Family:
    """The registered family ``name`` (ConfigError listing the registered ones otherwise)."""
    return FAMILIES.get(name)


def forecaster_class(name: str) -> type[Forecaster]:
    """The Forecaster of family ``name``; ConfigError if no such family is registered."""
    return FAMILIES.get(name).forecaster_class()


def baseline_families() -> tuple[str, ...]:
    """The from-scratch baseline families, in registration order."""
    return tuple(family.name for family in FAMILIES if family.baseline)


def naive_reference_family() -> str | None:
    """The family whose forecast the persistence-to-oracle gap starts from (persistence)."""
    return next((family.name for family in FAMILIES if family.naive_reference), None)


# --- the families -------------------------------------------------------------------------

register("chronos", "vitalfm.models.chronos:ChronosForecaster")
register("moirai", "vitalfm.models.moirai:MoiraiForecaster")
register("lag_llama", "vitalfm.models.lag_llama:LagLlamaForecaster")
register(
    "persistence",
    "vitalfm.models.baselines.persistence:PersistenceForecaster",
    baseline=True,
    has_parameters=False,
    naive_reference=True,
)
register("nhits", "vitalfm.models.baselines.nhits:NHitsForecaster", baseline=True)
register("nbeats", "vitalfm.models.baselines.nbeats:NBeatsForecaster", baseline=True)
register("dlinear", "vitalfm.models.baselines.dlinear:DLinearForecaster", baseline=True)
