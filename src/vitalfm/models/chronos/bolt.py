"""Chronos-Bolt: a T5 encoder-decoder over patches that emits quantiles directly.

Training minimises its quantile (pinball) loss relative to the context's level (see
:meth:`ChronosBoltForecaster.loss` for why not Bolt's own normalisation); forecasting is the
pipeline's ``predict``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from vitalfm.models.base import Forecast, ModelSource, SeriesBatch, TimeAxis, eval_mode
from vitalfm.models.chronos.base import STANDIN_COMMON, STANDIN_T5, ChronosForecaster
from vitalfm.models.series_loss import pooled

BOLT_QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]


def context_level(context: torch.Tensor) -> torch.Tensor:
    """[B] mean absolute value of each context's observed points (1 for none, floored at 1e-3).

    What the relative pinball losses divide by: it comes from the context only, so a target
    cannot change its own weight.
    """
    return torch.nan_to_num(context.abs().nanmean(dim=-1), nan=1.0).clamp_min(1e-3)


@ChronosForecaster.VARIANTS.register
class ChronosBoltForecaster(ChronosForecaster):
    VARIANT: ClassVar[str] = "chronos-bolt"
    PIPELINE: ClassVar[str] = "ChronosBoltPipeline"
    loss_name: ClassVar[str] = "quantile_loss"

    def __init__(self, pipeline: Any, source: ModelSource) -> None:
        super().__init__(pipeline, source)
        self._bolt_quantiles = [float(q) for q in pipeline.model.chronos_config.quantiles]
        # Bolt decodes one step: the decoder's key/value cache is never read again, and
        # building it (two deep copies of the config per call in transformers 5) costs ~1 ms
        # a forward pass. The decoder's config is its own copy, not the checkpoint's.
        pipeline.model.decoder.config.use_cache = False

    @classmethod
    def standin_pipeline(cls, horizon: int) -> Any:
        from chronos import ChronosBoltPipeline
        from chronos.chronos_bolt import ChronosBoltModelForForecasting
        from transformers import T5Config

        config = T5Config(
            vocab_size=2,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            is_encoder_decoder=True,
            architectures=["ChronosBoltModelForForecasting"],
            chronos_pipeline_class="ChronosBoltPipeline",
            chronos_config=dict(
                context_length=512,
                prediction_length=horizon,
                input_patch_size=16,
                input_patch_stride=16,
                quantiles=BOLT_QUANTILES,
                use_reg_token=True,
            ),
            **STANDIN_T5,
            **STANDIN_COMMON,
        )
        return ChronosBoltPipeline(model=ChronosBoltModelForForecasting(config))

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """Bolt's pinball loss, scaled by the context's mean absolute value.

        Bolt's own loss divides errors by the context's standard deviation (floored at 1e-5),
        so one flat context (SpO2 at 100 %, a filled gap) outweighs a whole batch by orders
        of magnitude. The same quantile loss relative to the series' level, as Chronos-T5
        scales its inputs, keeps every series' weight bounded.
        """
        preds = self.module(context=batch.context).quantile_preds[..., : batch.target.shape[-1]]
        target = batch.target.to(preds.dtype)
        observed = ~torch.isnan(target)
        scale = context_level(batch.context)
        levels = torch.tensor(self._bolt_quantiles, device=preds.device).view(1, -1, 1)
        error = torch.where(observed, target, 0.0).unsqueeze(1) - preds
        pinball = 2 * torch.maximum(levels * error, (levels - 1) * error).sum(dim=1)
        return pooled(pinball / scale.unsqueeze(-1), observed, reduction)

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
        return self.quantile_forecast(self.pipeline.predict(context, prediction_length=horizon))
