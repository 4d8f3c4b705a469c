"""What the MOIRAI variants share: checkpoints, the variant choice, options and adapter targets.

:class:`MoiraiForecaster` is the family's class (the one the registry names). Checkpoints (hub
ids, local folders and our stand-ins alike) are uni2ts's ``PyTorchModelHubMixin`` format,
``config.json`` + ``model.safetensors``; the config chooses the variant class
(:meth:`MoiraiForecaster.variant_for_config`) and the weights are opened with that variant's
uni2ts module class's own ``from_pretrained``. The mixin writes only that layout and reads
only it from a folder (from the hub it falls back to ``pytorch_model.bin``); a sharded
safetensors save (huggingface_hub's ``save_torch_model``) or a ``pytorch_model.bin`` is read
with huggingface_hub's ``load_torch_model`` into the module the config describes, built as the
mixin builds it (:func:`module_from_config`).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.models import checkpoints
from vitalfm.models.base import (
    Forecast,
    Forecaster,
    ModelError,
    ModelSource,
    TargetModules,
    TimeAxis,
    eval_mode,
)
from vitalfm.models.variants import Variants

CONFIG_FILE = checkpoints.CONFIG_FILE
HUB_EXAMPLE = "Salesforce/moirai-1.1-R-small"

# 6 h contexts (24 steps of 15 min) and 3 h horizons (12 steps): patch 16 gives two context
# tokens and one horizon token. MOIRAI's pretraining used 32-128 for minute-level data, which
# would leave a 24-step context a single token; 8 triples the attention cost for little gain.
DEFAULT_PATCH_SIZE = 16
AUTO = "auto"

# The linears of every transformer layer (same names in both variants). A bare "out_proj"
# would also hit Moirai-2's output head (a ResidualBlock, which peft refuses).
_ATTENTION = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
)
_FFN = ("ffn.fc1", "ffn.fc2", "ffn.fc_gate")
# The norms of the attention blocks: the pre-attention RMSNorm and the query/key norms.
_ATTENTION_NORMS = (r"encoder\.layers\.\d+\.(norm1|self_attn\.[qk]_norm)",)


def _read_config(path: Path, where: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ModelError(
            f"{where}: config.json is unreadable ({err})",
            "copy the complete released checkpoint again",
        ) from None
    if not isinstance(config, dict):
        raise ModelError(
            f"{where}: config.json is not a JSON object", "copy the released config.json again"
        )
    return config


def module_from_config(module_class: Any, config: Mapping[str, Any]) -> nn.Module:
    """A new module of ``config`` (randomly initialised), its settings decoded by the module
    class's own hub-mixin decoders (``distr_output``), as ``from_pretrained`` builds the module
    before reading the weights into it."""
    parameters = inspect.signature(module_class.__init__).parameters
    return module_class(
        **{
            name: module_class._decode_arg(parameters[name].annotation, value)
            for name, value in config.items()
        }
    )


class MoiraiForecaster(Forecaster):
    """The MOIRAI family: one subclass per variant (see :data:`VARIANTS`), around a uni2ts
    module and the uni2ts forecast module (``_net``) whose input packing it reuses."""

    family: ClassVar[str] = "moirai"
    #: The variant classes, by name (their stand-in's name).
    VARIANTS: ClassVar[Variants[type[MoiraiForecaster]]] = Variants("moirai")
    #: The variant's name (``moirai``, ``moirai-2``).
    VARIANT: ClassVar[str]
    #: The keys a checkpoint's config.json has for this variant (how it is recognised).
    CONFIG_KEYS: ClassVar[frozenset[str]]
    OPTIONS: ClassVar[dict[str, str]] = {
        "patch_size": (
            "MOIRAI 1.x: one of the checkpoint's patch sizes (8, 16, 32, 64, 128 for the "
            "released models) or 'auto' (per series, the size with the lowest NLL on the last "
            "horizon-length stretch of its context, as MoiraiForecast's 'auto'); default 16. "
            "Moirai-2 has one patch size (16): only that or 'auto' is accepted."
        )
    }

    def __init__(self, module: nn.Module, source: ModelSource) -> None:
        if type(module) is not self.module_class():
            raise ModelError(
                f"{type(module).__name__} is not a {self.module_class().__name__}",
                "build the forecaster with MoiraiForecaster.for_module or load the checkpoint "
                "with MoiraiForecaster.load, which pick the variant class",
            )
        super().__init__(module, source, self.VARIANT)
        self.patch_sizes = self.checkpoint_patch_sizes(module)
        self.patch_size: int | str = (
            DEFAULT_PATCH_SIZE if DEFAULT_PATCH_SIZE in self.patch_sizes else self.patch_sizes[0]
        )
        # The uni2ts forecast module whose _convert/forward we call; it holds no weights of its own.
        self._net: Any = self.forecast_module(module)
        #: Patch sizes the loss trains with: one, or several (a training step draws one, the
        #: validation loss averages them). "auto" trains every size; so do stand-ins.
        self.train_patch_sizes: tuple[int, ...] = (int(self.patch_size),)

    # --- what each variant provides ----------------------------------------------------------

    @classmethod
    @abstractmethod
    def module_class(cls) -> type[nn.Module]:
        """The variant's uni2ts module class (imported on demand)."""

    @staticmethod
    @abstractmethod
    def checkpoint_patch_sizes(module: nn.Module) -> tuple[int, ...]:
        """The patch sizes the module was trained with."""

    @abstractmethod
    def forecast_module(self, module: nn.Module) -> Any:
        """The uni2ts forecast module around ``module`` (packing and decoding)."""

    @classmethod
    @abstractmethod
    def standin_module(cls) -> nn.Module:
        """A new module of the variant's stand-in shape (random init from torch's RNG)."""

    @abstractmethod
    def _forecast(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        """Forecast a float context already on the module's device (eval mode, no grad);
        ``seeds`` as in :meth:`Forecaster.predict` (one random stream per row)."""

    def auto_patch_size(self) -> int | str:
        """What option ``patch_size: auto`` forecasts with (a variant with one size: that)."""
        return self.patch_sizes[0]

    # --- choosing the variant -----------------------------------------------------------------

    @classmethod
    def variant_for_config(cls, config: Mapping[str, Any], where: str) -> type[MoiraiForecaster]:
        """The variant class a checkpoint's config.json describes; ModelError for any other
        model (MOIRAI 1.x: ``patch_sizes`` + ``distr_output``; Moirai-2: ``patch_size`` +
        ``quantile_levels``)."""
        variant = next((v for v in cls.VARIANTS if set(config) >= v.CONFIG_KEYS), None)
        if variant is None:
            hint = " (it looks like a Chronos checkpoint)" if "chronos_config" in config else ""
            raise ModelError(
                f"{where} is not a MOIRAI checkpoint{hint}: its config.json has neither "
                "patch_sizes + distr_output (MOIRAI 1.x) nor patch_size + quantile_levels "
                "(Moirai-2)",
                "use `family: moirai` only for MOIRAI 1.0/1.1 or Moirai-2.0 checkpoints "
                "(Chronos checkpoints take `family: chronos`)",
            )
        module_class = variant.module_class()
        accepted = set(inspect.signature(module_class.__init__).parameters) - {"self"}
        extra = sorted(set(config) - accepted)
        if extra:
            raise ModelError(
                f"{where} has settings {', '.join(extra)} that {module_class.__name__} does not "
                "take (a MOIRAI-MoE or other uni2ts model?)",
                "use a MOIRAI 1.0/1.1 (Salesforce/moirai-1.1-R-*) or Moirai-2.0 "
                "(Salesforce/moirai-2.0-R-small) checkpoint",
            )
        return variant

    @classmethod
    def for_module(cls, module: nn.Module, source: ModelSource) -> MoiraiForecaster:
        """The variant's forecaster around a uni2ts module already built."""
        for variant in cls.VARIANTS:
            if type(module) is variant.module_class():
                return variant(module, source)
        raise ModelError(
            f"{type(module).__name__} is not a MOIRAI module",
            "use a MOIRAI 1.x (MoiraiModule) or Moirai-2 (Moirai2Module) checkpoint",
        )

    @classmethod
    def check_local_checkpoint(cls, path: Path) -> tuple[type[MoiraiForecaster], str, dict]:
        """(variant class, weight layout, config) of a local folder; a clear ModelError if it
        cannot be a MOIRAI checkpoint (naming the files it lacks)."""
        layout = checkpoints.check_folder(path, HUB_EXAMPLE)
        where = f"model folder {path}"
        config = _read_config(path / CONFIG_FILE, where)
        return cls.variant_for_config(config, where), layout, config

    # --- options ------------------------------------------------------------------------------

    def apply_options(self, options: dict[str, Any]) -> None:
        if "patch_size" not in options:
            return
        value = options["patch_size"]
        allowed = ", ".join(map(str, self.patch_sizes))
        if value == AUTO:
            self.patch_size = self.auto_patch_size()
            self.train_patch_sizes = self.patch_sizes
            return
        if isinstance(value, bool) or not isinstance(value, int) or value not in self.patch_sizes:
            raise ModelError(
                f"patch_size {value!r} is not one of this {self.variant} checkpoint's patch "
                f"sizes ({allowed})",
                f"set models.<name>.options.patch_size to one of {allowed} or 'auto'",
            )
        self.patch_size = value
        self.train_patch_sizes = (value,)

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    def load(cls, source: ModelSource, device: torch.device) -> MoiraiForecaster:
        """Open a checkpoint (any layout of :data:`checkpoints.WEIGHT_LAYOUTS`; a hub id from
        the Hugging Face cache or the hub) as uni2ts does: in float32 on every device, since
        its mixin builds the module in float32 and copies the stored weights in."""
        from huggingface_hub import load_torch_model
        from safetensors import SafetensorError

        location = source.location
        folder = checkpoints.source_folder(location, source.hub is not None)
        variant, layout, config = cls.check_local_checkpoint(folder)
        stored = checkpoints.checkpoint_dtype(folder, layout, config)
        dtype = checkpoints.load_dtype(device, stored, cls.KEEPS_CHECKPOINT_DTYPE)
        module_class = variant.module_class()
        try:
            if layout == checkpoints.SAFETENSORS_FILE:
                # uni2ts's loader prints "Loading weights from local directory"; strict: a
                # checkpoint lacking weights must fail, not leave them random.
                with contextlib.redirect_stdout(io.StringIO()):
                    module = module_class.from_pretrained(folder, strict=True)
            else:
                module = module_from_config(module_class, config)
                safe = layout != checkpoints.PICKLE_FILE  # torch's restricted unpickler otherwise
                load_torch_model(module, folder, strict=True, safe=safe, map_location="cpu")
                module.eval()
        except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as err:
            raise ModelError(
                f"cannot load the {variant.VARIANT} checkpoint in {location}: {err}",
                "check that config.json and the weights come from the same complete, "
                "uncorrupted released checkpoint",
            ) from None
        module.to(device=device, dtype=dtype)
        forecaster = variant(module, source)
        forecaster.checkpoint_dtype = stored
        return forecaster

    @classmethod
    def standin_names(cls) -> tuple[str, ...]:
        return cls.VARIANTS.names()

    @classmethod
    def standin(cls, name: str, horizon: int, seed: int) -> MoiraiForecaster:
        """A randomly initialised small member of the named variant, in the released format.

        The MOIRAI 1.x stand-in pretrains every patch size (one drawn per step), as MOIRAI's
        pretraining covers all of them; ``horizon`` is not part of either architecture.
        """
        del horizon
        variant = cls.VARIANTS.get(name)
        if variant is None:
            raise ModelError(
                f"unknown MOIRAI stand-in {name!r}", f"use one of {', '.join(cls.standin_names())}"
            )
        torch.manual_seed(seed)
        module = variant.standin_module()
        module.eval()
        forecaster = variant(module, ModelSource(standin=name))
        forecaster.train_patch_sizes = forecaster.patch_sizes
        return forecaster

    def write_pretrained(self, directory: Path) -> None:
        self.module.save_pretrained(directory)

    def set_module(self, module: nn.Module) -> None:
        super().set_module(module)
        self._net.module = module

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "patch_size": self.patch_size,
            "training_patch_sizes": list(self.train_patch_sizes),
        }

    # --- adaptation targets ----------------------------------------------------------------

    def target_modules(self) -> TargetModules:
        return TargetModules(
            attention=_ATTENTION,
            ffn=_FFN,
            norms=_ATTENTION_NORMS,
            bias_linears=(*_ATTENTION, *_FFN),
        )

    # --- forecasting -----------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    def _base_module(self) -> nn.Module:
        """The uni2ts module, under an adapter wrapper if there is one."""
        return (
            self.module.get_base_model() if hasattr(self.module, "get_base_model") else self.module
        )

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,  # MOIRAI has no calendar features
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        eval_mode(self.module)
        device = self._device()
        if self._net.device != device:  # Moirai2Forecast places its own tensors on it
            self._net.to(device)
        return self._forecast(context.float().to(device), horizon, num_samples, seeds=seeds)
