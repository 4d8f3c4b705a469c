"""What the Chronos variants share: loading a checkpoint, choosing the variant, stand-in shapes.

:class:`ChronosForecaster` is the family's class (the one the registry names). It opens every
checkpoint with chronos-forecasting's ``BaseChronosPipeline.from_pretrained`` and wraps the
pipeline in the variant class that the checkpoint's config names
(:meth:`ChronosForecaster.variant_for_config`), as that loader picks the pipeline class.
Every weight layout of :mod:`vitalfm.models.checkpoints` loads (transformers reads them all);
a hub id is first resolved to its snapshot in the Hugging Face cache, so that hub and local
checkpoints pass the same folder check and dtype choice.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError
from torch import nn

from vitalfm.models import checkpoints
from vitalfm.models.base import Forecast, Forecaster, ModelError, ModelSource, TargetModules
from vitalfm.models.variants import Variants

HUB_EXAMPLE = "amazon/chronos-t5-small"

# Stand-ins: the released architectures and config formats, scaled down so that the
# `pretrain` rule can train them in a few CPU minutes. Released sizes for comparison:
# chronos-t5-tiny d_model 256, 4+4 layers; chronos-bolt-tiny the same; chronos-2 d_model 768, 12 L.
# Chronos-T5 and Chronos-Bolt stand-ins share one T5 shape.
STANDIN_T5 = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4)
STANDIN_COMMON = dict(dropout_rate=0.1, feed_forward_proj="relu", initializer_factor=0.05)


def patch_bolt_for_peft() -> None:
    """peft (>=0.2x) with transformers 5 asks Bolt for input embeddings it does not declare."""
    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    if "get_input_embeddings" not in ChronosBoltModelForForecasting.__dict__:
        ChronosBoltModelForForecasting.get_input_embeddings = lambda self: self.shared  # type: ignore[method-assign]


def check_local_checkpoint(path: Path) -> tuple[str, dict[str, Any]]:
    """(weight layout, config) of a local Chronos checkpoint folder; a clear ModelError for a
    folder that cannot be one (naming the files it lacks)."""
    layout = checkpoints.check_folder(path, HUB_EXAMPLE)
    try:
        config = json.loads((path / checkpoints.CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(
            f"model folder {path}: config.json is not valid JSON ({err})",
            "copy the released checkpoint's config.json there again (a download or copy "
            "was cut short, or the file was edited by hand)",
        ) from None
    if not isinstance(config, dict) or "chronos_config" not in config:
        raise ModelError(
            f"model folder {path} is not a Chronos checkpoint (config.json has no chronos_config)",
            "use `family: chronos` only for Chronos-T5, Chronos-Bolt or Chronos-2 checkpoints",
        )
    return layout, config


class ChronosForecaster(Forecaster):
    """The Chronos family: one subclass per variant (see :data:`VARIANTS`), around a pipeline.

    ``pipeline`` is chronos-forecasting's pipeline, whose network is ``module``; forecasting
    goes through the pipeline, training calls the same network with each variant's objective.
    """

    family: ClassVar[str] = "chronos"
    KEEPS_CHECKPOINT_DTYPE: ClassVar[bool] = True
    #: The variant classes, by name (their stand-in's name).
    VARIANTS: ClassVar[Variants[type[ChronosForecaster]]] = Variants("chronos")
    #: The variant's name (``chronos-t5``, ``chronos-bolt``, ``chronos-2``).
    VARIANT: ClassVar[str]
    #: The chronos-forecasting pipeline class a checkpoint of this variant names in its
    #: config's ``chronos_pipeline_class`` (Chronos-T5 configs name none).
    PIPELINE: ClassVar[str]

    def __init__(self, pipeline: Any, source: ModelSource) -> None:
        if type(pipeline).__name__ != self.PIPELINE:
            raise ModelError(
                f"{type(pipeline).__name__} is not a supported Chronos pipeline for "
                f"{type(self).__name__} (it takes a {self.PIPELINE})",
                "load the checkpoint with ChronosForecaster.load, which picks the variant "
                "class from its config",
            )
        self.pipeline = pipeline
        super().__init__(self.network_of(pipeline), source, self.VARIANT)

    @staticmethod
    def network_of(pipeline: Any) -> nn.Module:
        """The network the pipeline forecasts with (what adapters wrap and training updates)."""
        return pipeline.model

    def attach_network(self, module: nn.Module) -> None:
        """Point the pipeline at ``module`` (a wrapped or merged network)."""
        self.pipeline.model = module

    def set_module(self, module: nn.Module) -> None:
        super().set_module(module)
        self.attach_network(module)

    # --- choosing the variant -----------------------------------------------------------------

    @classmethod
    def variant_for_config(cls, config: Mapping[str, Any]) -> type[ChronosForecaster]:
        """The variant class of a checkpoint whose ``config.json`` is ``config``.

        By its ``chronos_pipeline_class`` (``ChronosPipeline`` when absent, as in Chronos-T5
        checkpoints), as ``BaseChronosPipeline.from_pretrained`` chooses the pipeline class.
        """
        name = config.get("chronos_pipeline_class", "ChronosPipeline")
        for variant in cls.VARIANTS:
            if name == variant.PIPELINE:
                return variant
        raise ModelError(
            f"{name} is not a supported Chronos pipeline",
            "use a Chronos-T5, Chronos-Bolt or Chronos-2 checkpoint",
        )

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    def load(cls, source: ModelSource, device: torch.device) -> ChronosForecaster:
        """Open a checkpoint (any layout of :data:`checkpoints.WEIGHT_LAYOUTS`; a hub id from
        the Hugging Face cache or the hub) with ``BaseChronosPipeline.from_pretrained``, in
        the dtype of :func:`checkpoints.load_dtype` (float32 on CPU, the checkpoint's own on
        CUDA, as chronos-forecasting loads it by default)."""
        from chronos import BaseChronosPipeline

        patch_bolt_for_peft()
        location = source.location
        folder = checkpoints.source_folder(location, source.hub is not None)
        layout, config = check_local_checkpoint(folder)
        stored = checkpoints.checkpoint_dtype(folder, layout, config)
        dtype = checkpoints.load_dtype(device, stored, cls.KEEPS_CHECKPOINT_DTYPE)
        try:
            pipeline = BaseChronosPipeline.from_pretrained(
                folder, device_map=str(device), dtype=dtype
            )
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:
            raise ModelError(
                f"cannot load the Chronos checkpoint in {location}: {err}",
                "check that the folder holds a complete, uncorrupted released checkpoint",
            ) from None
        variant = cls.variant_for_config(pipeline.inner_model.config.to_dict())
        if not issubclass(variant, cls):
            raise ModelError(
                f"{location} holds a {variant.VARIANT} checkpoint, not a {cls.VARIANT} one",
                "load it with ChronosForecaster.load",
            )
        forecaster = variant(pipeline, source)
        forecaster.checkpoint_dtype = stored
        return forecaster

    @classmethod
    def standin_names(cls) -> tuple[str, ...]:
        return cls.VARIANTS.names()

    @classmethod
    def standin(cls, name: str, horizon: int, seed: int) -> ChronosForecaster:
        """A randomly initialised small member of the named variant, in the released format."""
        variant = cls.VARIANTS.get(name)
        if variant is None:
            raise ModelError(
                f"unknown Chronos stand-in {name!r}",
                f"use one of {', '.join(cls.standin_names())}",
            )
        patch_bolt_for_peft()
        torch.manual_seed(seed)
        pipeline = variant.standin_pipeline(horizon)
        pipeline.model.eval()
        return variant(pipeline, ModelSource(standin=name))

    @classmethod
    @abstractmethod
    def standin_pipeline(cls, horizon: int) -> Any:
        """A new pipeline of the variant's stand-in shape (random init from torch's RNG)."""

    def write_pretrained(self, directory: Path) -> None:
        self.module.save_pretrained(directory)

    # --- adaptation targets ----------------------------------------------------------------

    def target_modules(self) -> TargetModules:
        """T5 naming, shared by Chronos-T5 and Chronos-Bolt: q/k/v/o in every attention block
        (encoder self, decoder self, cross), wi/wo in the feed-forward blocks."""
        return TargetModules(
            attention=("q", "k", "v", "o"),
            ffn=("wi", "wo"),
            # norms of the encoder self-attention and decoder self- and cross-attention
            norms=(
                r"(encoder\.block\.\d+\.layer\.0|decoder\.block\.\d+\.layer\.[01])\.layer_norm",
            ),
            bias_linears=("q", "k", "v", "o", "wi", "wo"),
        )

    # --- forecasting ------------------------------------------------------------------------

    def quantile_forecast(self, quantiles: torch.Tensor) -> Forecast:
        """A forecast of quantiles [B, Q, H] at the pipeline's levels (Bolt, Chronos-2)."""
        levels = tuple(float(q) for q in self.pipeline.quantiles)
        median = quantiles[:, levels.index(0.5)]
        return Forecast(median=median, quantiles=quantiles, quantile_levels=levels)
