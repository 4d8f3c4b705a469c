"""The variant classes of a family whose variants behave differently.

Chronos (T5, Bolt, Chronos-2) and MOIRAI (1.x, Moirai-2) each have one Forecaster subclass
per variant on a shared family base class. The base holds a :class:`Variants` that each
variant class joins with ``@Family.VARIANTS.register``, and picks the class from a
checkpoint's config, as chronos-forecasting's ``BaseChronosPipeline.from_pretrained`` picks
its pipeline class. The variant's name is also its stand-in's name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V", bound=type)


class Variants(Generic[V]):
    """Variant classes by name (their ``VARIANT``), in registration order, each name once."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._classes: dict[str, V] = {}

    def register(self, variant: V) -> V:
        """Add a variant class (a class decorator); ValueError for a name already taken."""
        name = variant.VARIANT  # type: ignore[attr-defined]
        if name in self._classes:
            raise ValueError(
                f"{self.family} variant {name!r} is already registered "
                f"(by {self._classes[name].__name__})"
            )
        self._classes[name] = variant
        return variant

    def names(self) -> tuple[str, ...]:
        return tuple(self._classes)

    def get(self, name: str) -> V | None:
        return self._classes.get(name)

    def __iter__(self) -> Iterator[V]:
        return iter(self._classes.values())
