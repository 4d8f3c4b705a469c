"""Chronos-2: an encoder with time and group attention over patches, emitting quantiles.

Training minimises the model's own quantile loss on the horizon; forecasting is the
pipeline's ``predict`` (one univariate task per row).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from vitalfm.models.base import (
    Forecast,
    ModelSource,
    SeriesBatch,
    TargetModules,
    TimeAxis,
    eval_mode,
)
from vitalfm.models.chronos.base import STANDIN_COMMON, ChronosForecaster
from vitalfm.models.chronos.group_attention import use_own_group_attention

# Released size for comparison: amazon/chronos-2 d_model 768, 12 layers.
STANDIN_CHRONOS2 = dict(d_model=64, d_kv=16, d_ff=256, num_layers=2, num_heads=4)
#: Series per forward pass when forecasting: Chronos2Pipeline.predict's own default. Its group
#: attention runs along the batch axis (masked to each row's own group), at a cost that grows
#: with the square of the batch, so larger engine calls are cut into passes of this size.
PREDICT_BATCH = 256
# The 21 levels of amazon/chronos-2.
CHRONOS2_QUANTILES = [0.01, 0.05] + [round(0.05 * i, 2) for i in range(2, 19)] + [0.95, 0.99]


@ChronosForecaster.VARIANTS.register
class Chronos2Forecaster(ChronosForecaster):
    VARIANT: ClassVar[str] = "chronos-2"
    PIPELINE: ClassVar[str] = "Chronos2Pipeline"
    loss_name: ClassVar[str] = "quantile_loss"
    #: Quantiles from forward passes where each row is its own group (no cross-learning).
    deterministic: ClassVar[bool] = True

    def __init__(self, pipeline: Any, source: ModelSource) -> None:
        super().__init__(pipeline, source)
        self._output_patch_size = int(pipeline.model.chronos_config.output_patch_size)
        # every series is its own group here: its group attention is its value projection
        use_own_group_attention(pipeline.model)

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
        seeds: np.ndarray | None = None,  # deterministic: draws nothing
    ) -> Forecast:
        eval_mode(self.module)
        context = context.float().cpu()
        pipeline = self.pipeline
        if -(-horizon // pipeline.model_output_patch_size) > pipeline.max_output_patches:
            # a horizon beyond one forward pass: the library's own unrolling, through predict
            outputs = pipeline.predict(
                context[:, None, :], prediction_length=horizon, batch_size=PREDICT_BATCH
            )
            return self.quantile_forecast(torch.cat(outputs, dim=0))  # each (1, Q, H)
        # What predict does for a [B, 1, T] tensor, without its per-series Python
        # (Chronos2Dataset builds, pads and concatenates one task per row): the last
        # context_length points, every row its own group, no known future covariates.
        # _predict_batch is private; tests/test_chronos.py checks this equals predict.
        context = context[:, -pipeline.model_context_length :]
        parts = []
        for start in range(0, len(context), PREDICT_BATCH):
            rows = len(context[start : start + PREDICT_BATCH])
            parts += pipeline._predict_batch(
                context=context[start : start + PREDICT_BATCH],
                group_ids=torch.arange(rows),
                future_covariates=torch.full((rows, horizon), torch.nan),
                unrolled_quantiles_tensor=torch.empty(0),  # used only beyond one pass
                prediction_length=horizon,
                max_output_patches=pipeline.max_output_patches,
                target_idx_ranges=[(0, rows)],
            )
        return self.quantile_forecast(torch.cat(parts, dim=0))
