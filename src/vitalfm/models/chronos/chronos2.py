"""Chronos-2: an encoder with time and group attention over patches, emitting quantiles.

Training minimises the model's own quantile loss on the horizon; forecasting is the
pipeline's ``predict`` (one univariate task per row).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from vitalfm.models.base import Forecast, ModelSource, SeriesBatch, TargetModules, TimeAxis
from vitalfm.models.chronos.base import STANDIN_COMMON, ChronosForecaster

# Released size for comparison: amazon/chronos-2 d_model 768, 12 layers.
STANDIN_CHRONOS2 = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_heads=4)
# The 21 levels of amazon/chronos-2.
CHRONOS2_QUANTILES = [0.01, 0.05] + [round(0.05 * i, 2) for i in range(2, 19)] + [0.95, 0.99]


@ChronosForecaster.VARIANTS.register
class Chronos2Forecaster(ChronosForecaster):
    VARIANT: ClassVar[str] = "chronos-2"
    PIPELINE: ClassVar[str] = "Chronos2Pipeline"
    loss_name: ClassVar[str] = "quantile_loss"

    def __init__(self, pipeline: Any, source: ModelSource) -> None:
        super().__init__(pipeline, source)
        self._output_patch_size = int(pipeline.model.chronos_config.output_patch_size)

    @classmethod
    def standin_pipeline(cls, horizon: int) -> Any:
        """The stand-in; ``horizon`` is not part of the architecture (it decodes patches)."""
        from chronos.chronos2 import Chronos2Model, Chronos2Pipeline
        from chronos.chronos2.config import Chronos2CoreConfig

        config = Chronos2CoreConfig(
            rope_theta=10000.0,
            attn_implementation="sdpa",
            architectures=["Chronos2Model"],
            chronos_pipeline_class="Chronos2Pipeline",
            chronos_config=dict(
                context_length=512,
                input_patch_size=16,
                input_patch_stride=16,
                output_patch_size=16,
                quantiles=CHRONOS2_QUANTILES,
                use_reg_token=True,
                use_arcsinh=True,
                max_output_patches=4,
                time_encoding_scale=512,
            ),
            **STANDIN_CHRONOS2,
            **STANDIN_COMMON,
        )
        return Chronos2Pipeline(model=Chronos2Model(config))

    def target_modules(self) -> TargetModules:
        return TargetModules(
            attention=(
                "self_attention.q",
                "self_attention.k",
                "self_attention.v",
                "self_attention.o",
            ),
            ffn=("mlp.wi", "mlp.wo"),
            # time attention (layer.0) and group attention (layer.1) norms
            norms=(r"encoder\.block\.\d+\.layer\.[01]\.layer_norm",),
            bias_linears=(
                "self_attention.q",
                "self_attention.k",
                "self_attention.v",
                "self_attention.o",
                "mlp.wi",
                "mlp.wo",
            ),
        )

    def loss(self, batch: SeriesBatch) -> torch.Tensor:
        patches = -(-batch.target.shape[-1] // self._output_patch_size)
        return self.module(
            context=batch.context, future_target=batch.target, num_output_patches=patches
        ).loss

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,  # Chronos has no calendar features
    ) -> Forecast:
        self.module.eval()
        context = context.float().cpu()
        outputs = self.pipeline.predict(
            context[:, None, :], prediction_length=horizon, batch_size=len(context)
        )
        return self.quantile_forecast(torch.cat(outputs, dim=0))  # each (1, Q, H)
