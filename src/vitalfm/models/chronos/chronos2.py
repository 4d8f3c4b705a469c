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
from vitalfm.models.series_loss import check_reduction

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
    loss_pooling: ClassVar[str] = "series"

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

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """The model's own quantile loss: per series, 2 x the pinball loss summed over the
        levels and averaged over the (patch-padded) horizon, unobserved points counting 0;
        the batch's loss is the mean over series. Every row is its own group (the model's
        default ``group_ids``), so no series sees another.

        ``reduction="none"`` recomputes the per-series terms from the same forward pass: the
        normalised quantiles ``output_patch_embedding`` emits, against the target normalised
        with the context's ``instance_norm`` statistics, as the model's loss does.
        """
        check_reduction(reduction)
        patches = -(-batch.target.shape[-1] // self._output_patch_size)
        if reduction == "mean":
            return self.module(
                context=batch.context, future_target=batch.target, num_output_patches=patches
            ).loss
        module = self.module
        base = module.get_base_model() if hasattr(module, "get_base_model") else module
        captured: list[torch.Tensor] = []
        hook = base.output_patch_embedding.register_forward_hook(
            lambda _m, _i, out: captured.append(out)
        )
        try:
            module(context=batch.context, future_target=batch.target, num_output_patches=patches)
        finally:
            hook.remove()
        levels = base.quantiles.view(1, -1, 1)
        # [B, patches, Q * patch] -> [B, Q, patches * patch], as the model arranges them
        preds = captured[-1].unflatten(-1, (levels.shape[1], self._output_patch_size))
        preds = preds.permute(0, 2, 1, 3).flatten(2)
        context = batch.context[..., -base.chronos_config.context_length :]
        _, loc_scale = base.instance_norm(context)
        target, _ = base.instance_norm(batch.target, loc_scale)
        observed = ~torch.isnan(target)
        padding = preds.shape[-1] - target.shape[-1]
        target = torch.nn.functional.pad(torch.where(observed, target, 0.0), (0, padding))
        observed = torch.nn.functional.pad(observed, (0, padding))
        error = target.unsqueeze(1).to(preds.dtype) - preds
        pinball = 2 * torch.maximum(levels * error, (levels - 1) * error)
        return (pinball * observed.unsqueeze(1)).mean(dim=-1).sum(dim=-1)

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
