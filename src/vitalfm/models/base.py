"""The forecasting interface every model family implements.

A family (Chronos, MOIRAI, Lag-Llama, the baselines, ...) defines a :class:`Forecaster`
subclass and is registered, with its traits, in :mod:`vitalfm.models.registry`, which the
config's ``family: <name>`` looks up. The engine only talks to this interface: it trains
``forecaster.module`` (wrapped by an adapter or not) through :meth:`Forecaster.loss`, and
forecasts through :meth:`Forecaster.predict`. A family whose variants behave differently gives
each its own subclass of a shared family class (:mod:`vitalfm.models.variants`).

All series are univariate, float32, in original units, with NaN where a value is missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.errors import ConfigError, VitalfmError


class ModelError(VitalfmError):
    """A model cannot be loaded, adapted, trained or saved as configured."""


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """``torch.bfloat16`` -> ``"bfloat16"`` (None stays None), as configs and metadata write it."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


def dominant_dtype(tensors: Iterable[Any]) -> torch.dtype | None:
    """The floating dtype most elements of ``tensors`` have (None if none is floating)."""
    counts: Counter[torch.dtype] = Counter()
    for tensor in tensors:
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            counts[tensor.dtype] += tensor.numel()
    return counts.most_common(1)[0][0] if counts else None


def module_dtype(module: nn.Module) -> torch.dtype | None:
    """The floating dtype most of ``module``'s parameters are held in (None if it has none):
    the base weights' dtype under an adapter whose own weights are kept in float32."""
    return dominant_dtype(module.parameters())


#: The two files of a peft adapter folder (what ``PeftModel.save_pretrained`` writes).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def read_adapter_config(directory: Path) -> dict[str, Any]:
    """A peft adapter folder's config; a clear ModelError if the folder is not one."""
    import json

    if not directory.is_dir():
        raise ModelError(
            f"adapter folder {directory} does not exist",
            "point `source: {adapter: ...}` at a folder holding adapter_config.json and "
            "adapter_model.safetensors (what peft's save_pretrained writes)",
        )
    missing = [f for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS) if not (directory / f).is_file()]
    if missing:
        raise ModelError(
            f"adapter folder {directory} lacks {', '.join(missing)}",
            "copy the whole folder that peft's save_pretrained (or Chronos2Pipeline.fit's "
            "pipeline.save_pretrained) wrote",
        )
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(
            f"{directory / ADAPTER_CONFIG} is unreadable: {err}", "copy the folder again"
        ) from None
    if not isinstance(config, dict) or "peft_type" not in config:
        raise ModelError(
            f"{directory / ADAPTER_CONFIG} is not a peft adapter config (no peft_type)",
            "point `source: {adapter: ...}` at a folder written by peft's save_pretrained",
        )
    return config


def adapter_base_reference(directory: Path) -> str:
    """The base model an adapter folder names (``base_model_name_or_path``)."""
    reference = read_adapter_config(directory).get("base_model_name_or_path")
    if not isinstance(reference, str) or not reference:
        raise ModelError(
            f"adapter {directory} does not name its base model",
            "give it beside the adapter: `source: {adapter: <folder>, base: <hub id or folder>}`",
        )
    return reference


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights come from: exactly one of ``hub``, ``path``, ``standin``,
    ``scratch`` or ``adapter``.

    ``standin`` names a small pretrained stand-in built by the ``pretrain`` rule; ``location``
    is then the folder that rule wrote (in the released format), so every source ends up
    loaded by the same loader code. ``scratch`` is a baseline with no pretrained weights: the
    family builds it from a seeded random init (:meth:`Forecaster.from_scratch`) and it is
    trained, if at all, on the study's own windows. ``adapter`` is a peft adapter folder
    trained elsewhere (e.g. by ``Chronos2Pipeline.fit``): its base (``base``, else the
    adapter config's ``base_model_name_or_path``) is loaded and the adapter merged into it.
    """

    hub: str | None = None
    path: str | None = None
    standin: str | None = None
    standin_dir: str | None = None
    scratch: bool = False
    adapter: str | None = None
    base: str | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("hub", "path", "standin", "scratch", "adapter")

    @classmethod
    def from_config(cls, entry: dict[str, Any]) -> ModelSource:
        keys = [k for k in cls.KEYS if entry.get(k)]
        unknown = set(entry) - {*cls.KEYS, "base"}
        if len(keys) != 1 or unknown or ("base" in entry and keys != ["adapter"]):
            raise ConfigError(
                f"a model source needs exactly one of hub, path, standin, scratch or adapter "
                f"(base only beside adapter), got {sorted(entry)}",
                "write e.g. `source: {hub: amazon/chronos-t5-small}`, "
                "`source: {path: /models/chronos-t5-small}`, `source: {standin: chronos-t5}`, "
                "`source: {adapter: /adapters/my-lora}` (optionally with `base: <hub id or "
                "folder>`) or, for a baseline trained from a random init, "
                "`source: {scratch: true}`",
            )
        if keys == ["scratch"]:
            if entry["scratch"] is not True:
                raise ConfigError(
                    f"source scratch = {entry['scratch']!r}", "write `source: {scratch: true}`"
                )
            return cls(scratch=True)
        return cls(
            **{k: entry[k] for k in ("hub", "path", "standin", "adapter", "base") if entry.get(k)}
        )

    @property
    def is_standin(self) -> bool:
        return self.standin is not None

    @property
    def is_scratch(self) -> bool:
        return self.scratch

    @property
    def location(self) -> str:
        """What the family's loader opens: a hub id or a local folder."""
        if self.hub:
            return self.hub
        if self.path:
            return self.path
        if self.scratch:
            raise ModelError(
                "a model built from scratch has no weights to open",
                "build it with the family's Forecaster.from_scratch (the engine does this)",
            )
        if self.adapter:
            raise ModelError(
                f"adapter {self.adapter} is not a model folder of its own",
                "load its base (ModelSource.adapter_base) and merge the adapter into it; "
                "vitalfm.steps.models.load_base does both",
            )
        if not self.standin_dir:
            raise ModelError(
                f"stand-in {self.standin!r} has no folder yet",
                "run it through the workflow, which pretrains stand-ins with the `pretrain` rule",
            )
        return self.standin_dir

    @property
    def portable_reference(self) -> str:
        """How another machine or program finds these weights: the hub id, or the absolute
        folder (what saved adapters record as their base)."""
        return self.hub if self.hub else str(Path(self.location).resolve())

    def adapter_base(self) -> ModelSource:
        """The source of an adapter's base model: ``base`` if given, else the adapter config's
        ``base_model_name_or_path``; a local folder if one exists there, else a hub id (as
        peft resolves it)."""
        if not self.adapter:
            raise ModelError("this source is not an adapter", "use source.location")
        reference = self.base or adapter_base_reference(Path(self.adapter))
        if Path(reference).expanduser().is_dir():
            return ModelSource(path=str(Path(reference).expanduser()))
        if reference.startswith(("/", ".", "~")) or reference.count("/") != 1:
            raise ModelError(
                f"the base of adapter {self.adapter}, {reference!r}, is neither a local folder "
                "nor a hub id",
                "give the base beside it: `source: {adapter: <folder>, base: <hub id or folder>}`",
            )
        return ModelSource(hub=reference)

    def describe(self) -> str:
        if self.hub:
            return f"hub:{self.hub}"
        if self.path:
            return f"path:{self.path}"
        if self.scratch:
            return "scratch (seeded random init; trained, if at all, on the study's windows)"
        if self.adapter:
            return f"adapter:{self.adapter} on {self.adapter_base().describe()}"
        return f"stand-in:{self.standin} (small model pretrained here on a synthetic corpus)"


@dataclass(frozen=True)
class TimeAxis:
    """When each row of a batch was measured: a regular grid per row.

    Point ``j`` of row ``b`` (``j = 0`` is the first context point, the horizon follows the
    context) was measured at ``start_s[b] + j * step_s`` seconds since the Unix epoch.
    Families with calendar features (Lag-Llama) use it; the others ignore it.
    """

    start_s: np.ndarray  # int64 [B]
    step_s: int

    def timestamps(self, length: int, offset: int = 0) -> np.ndarray:
        """datetime64[s] [B, length] of points ``offset`` .. ``offset + length - 1``."""
        steps = (np.arange(length, dtype=np.int64) + offset) * self.step_s
        return (self.start_s.astype(np.int64)[:, None] + steps).astype("datetime64[s]")

    def __getitem__(self, rows: Any) -> TimeAxis:
        return TimeAxis(np.atleast_1d(self.start_s[rows]), self.step_s)


@dataclass
class SeriesBatch:
    """A batch of univariate forecasting examples.

    ``context`` [B, C] may hold NaN (missing); ``target`` [B, H] holds NaN where the point
    must not count in the loss (missing, or filled in by the grid step). ``time`` says when
    the points were measured, where that is known.
    """

    context: torch.Tensor
    target: torch.Tensor
    time: TimeAxis | None = None

    def to(self, device: torch.device | str) -> SeriesBatch:
        return SeriesBatch(self.context.to(device), self.target.to(device), self.time)

    def __len__(self) -> int:
        return int(self.context.shape[0])

    def __getitem__(self, rows: slice) -> SeriesBatch:
        """The batch's rows ``rows`` (their times too)."""
        time = self.time[rows] if self.time is not None else None
        return SeriesBatch(self.context[rows], self.target[rows], time)


@dataclass
class Forecast:
    """A model's native probabilistic output for a batch, in original units.

    Exactly one of ``samples`` [B, S, H] or ``quantiles`` [B, Q, H] (at ``quantile_levels``)
    is set; :func:`vitalfm.engine.forecast.to_quantiles` turns either into the study's levels.
    """

    median: torch.Tensor  # [B, H]
    samples: torch.Tensor | None = None
    quantiles: torch.Tensor | None = None
    quantile_levels: tuple[float, ...] = ()


@dataclass(frozen=True)
class TargetModules:
    """Name patterns of the layers each adaptation method touches, per family.

    Patterns are module-name suffixes as peft matches them (``"q"`` matches
    ``...SelfAttention.q``). ``norms`` are the normalisation layers that LayerNorm tuning
    trains (those inside attention blocks), ``bias_linears`` the linears that BitFit gives a
    trainable bias.
    """

    attention: tuple[str, ...]
    ffn: tuple[str, ...] = ()
    norms: tuple[str, ...] = ()
    bias_linears: tuple[str, ...] = ()


def eval_mode(module: nn.Module) -> None:
    """Put ``module`` in eval mode, if any part of it is in training mode.

    ``module.eval()`` walks every submodule through Python (transformers overrides
    ``train``): about 1 ms a call on a small model, paid on every forecast batch, where
    checking the flags costs a few microseconds.
    """
    if any(part.training for part in module.modules()):
        module.eval()


class Forecaster(ABC):
    """One loaded model of a family, ready to train and forecast.

    ``module`` is the ``nn.Module`` that holds every weight; adaptation replaces it with a
    wrapped version (:meth:`set_module`) and the family's :meth:`loss` and :meth:`predict`
    must always go through the current ``module``.
    """

    family: ClassVar[str]
    #: Families whose loss is a proper likelihood report it as "nll"; others name theirs.
    loss_name: ClassVar[str] = "loss"
    #: Settings a config may give under ``models.<name>.options``: {name: what it does}.
    OPTIONS: ClassVar[dict[str, str]] = {}
    #: True when the family's library loads a checkpoint on GPU in the checkpoint's own dtype
    #: (chronos-forecasting: ``dtype="auto"``); False when it builds the network in float32 and
    #: copies the stored weights in (uni2ts, Lag-Llama). See
    #: :func:`vitalfm.models.checkpoints.load_dtype`.
    KEEPS_CHECKPOINT_DTYPE: ClassVar[bool] = False

    def __init__(self, module: nn.Module, source: ModelSource, variant: str) -> None:
        self.module = module
        self.source = source
        self.variant = variant
        self.options: dict[str, Any] = {}
        #: The dtype the loaded checkpoint stores its weights in (None for a model built here
        #: rather than loaded); set by the family's :meth:`load`.
        self.checkpoint_dtype: torch.dtype | None = None

    def configure(self, options: Mapping[str, Any]) -> None:
        """Apply ``models.<name>.options`` from the config (ModelError on unknown keys)."""
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            allowed = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ModelError(
                f"family {self.family} has no option(s) {', '.join(unknown)}",
                f"remove them from models.<name>.options (this family's options: {allowed})",
            )
        self.apply_options(dict(options))
        self.options = dict(options)

    def apply_options(self, options: dict[str, Any]) -> None:
        """Validate and apply family options (keys are already known to be in OPTIONS).

        The default accepts them as they are; families with options override this.
        """
        return None

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    @abstractmethod
    def load(cls, source: ModelSource, device: torch.device) -> Forecaster:
        """Load a released checkpoint (hub id or local folder) with the family's own loader,
        in the dtype of :func:`vitalfm.models.checkpoints.load_dtype`; set
        :attr:`checkpoint_dtype`."""

    @classmethod
    @abstractmethod
    def standin(cls, name: str, horizon: int, seed: int) -> Forecaster:
        """A randomly initialised stand-in of the family's architecture, scaled down."""

    @classmethod
    def standin_names(cls) -> tuple[str, ...]:
        return ()

    @classmethod
    def from_scratch(
        cls, options: Mapping[str, Any], context_steps: int, horizon_steps: int, seed: int
    ) -> Forecaster:
        """A new model from a seeded random init, for ``source: {scratch: true}`` baselines.

        Pretrained families have no such form; the baseline families
        (:mod:`vitalfm.models.baselines`) override this.
        """
        raise ModelError(
            f"family {cls.family} is a pretrained family and cannot be built from scratch",
            "give it a hub, path or standin source (the from-scratch baselines are the families "
            "registered with baseline=True in src/vitalfm/models/registry.py)",
        )

    def save_pretrained(self, directory: Path) -> None:
        """Save the full model in the released format (loadable by :meth:`load`).

        An adapter-wrapped module is refused: its checkpoint would not be the family's format.
        """
        if hasattr(self.module, "peft_config"):
            raise ModelError(
                "cannot save an adapter-wrapped model as a full checkpoint",
                "merge the adapter first (vitalfm.methods.adapting.merge_for_inference)",
            )
        self.write_pretrained(Path(directory))

    @abstractmethod
    def write_pretrained(self, directory: Path) -> None:
        """Write the (unwrapped) module to ``directory`` in the family's released format."""

    def set_module(self, module: nn.Module) -> None:
        """Swap in a wrapped or merged module (families with a pipeline re-point it here)."""
        self.module = module

    # --- what adaptation methods target ---------------------------------------------------

    @abstractmethod
    def target_modules(self) -> TargetModules: ...

    # --- training and forecasting ---------------------------------------------------------

    #: How the scalar loss combines the batch's series: "points" (every scored point weighs
    #: the same, so a series counts by its number of scored points) or "series" (the mean of
    #: the series' own losses). See :mod:`vitalfm.models.series_loss`.
    loss_pooling: ClassVar[str] = "points"

    @abstractmethod
    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """Training loss of the current module on the batch (differentiable).

        ``reduction="mean"`` (what the Trainer minimises): the scalar loss, pooled over the
        batch as :attr:`loss_pooling` says. ``"none"``: one loss per series [B], each what the
        scalar loss would be for a batch of that series alone (for most families its mean over
        its own scored points), from the same forward pass; a series' loss depends on no other
        row of the batch (tests/test_patient_isolation_training.py).
        """

    @abstractmethod
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        """Forecast ``horizon`` steps for each row of ``context`` [B, C] (eval mode, no grad).

        ``time`` places the rows in time (point 0 = first context point), where known.
        ``seeds`` (int64 [B], each in ``[0, 2**63)``, or None) is one seed per row: when
        given, every random draw for row ``i`` must come from its own stream seeded by
        ``seeds[i]``, so that row ``i``'s output depends only on its own context, time and
        seed, never on the other rows of the call, their number or order (the engine's
        patient isolation: :func:`vitalfm.engine.forecast.forecast_windows`). Families that
        draw nothing ignore it.
        """

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "variant": self.variant,
            "source": self.source.describe(),
            "standin": self.source.is_standin,
            "options": self.options,
            # what the weights are held and run in, and what the checkpoint stores
            "dtype": dtype_name(module_dtype(self.module)),
            "checkpoint_dtype": dtype_name(self.checkpoint_dtype),
        }
