"""Moirai-2: a decoder-only MOIRAI that emits quantiles for several patches per token.

Missing values inside a context get the causal mean and stay unobserved (gluonts'
``CausalMeanValueImputation``, as ``Moirai2Forecast``'s predictor; see
:func:`.inputs.moirai2_inputs` for why not ``Moirai2Forecast.predict``). uni2ts ships no
Moirai-2 training code (uni2ts #231), so the objective is ours, built from the model's own
training path (``training_mode=True``), its pinball loss measured relative to the context's
level rather than in the scaler's units: see :meth:`Moirai2Forecaster.loss`. Forecasting gives
``Moirai2Forecast``'s quantiles for the whole batch, from the context tokens alone where one
token predicts the whole horizon (:meth:`Moirai2Forecaster._context_token_quantiles`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.models.base import Forecast, ModelError, ModelSource, SeriesBatch
from vitalfm.models.moirai.base import MoiraiForecaster
from vitalfm.models.moirai.inputs import moirai2_inputs
from vitalfm.models.series_loss import pooled

# Stand-in: the released architecture and config format, scaled down so that the `pretrain`
# rule trains it in a few CPU minutes (moirai-2.0-R-small: d_model 384, d_ff 1024, 6 layers,
# patch 16, 4 predicted tokens).
STANDIN_MOIRAI2 = dict(
    d_model=64,
    d_ff=256,
    num_layers=2,
    patch_size=16,
    max_seq_len=512,
    attn_dropout_p=0.0,
    dropout_p=0.0,
    scaling=True,
    num_predict_token=4,
    quantile_levels=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
)


def context_level(context: torch.Tensor) -> torch.Tensor:
    """[B] mean absolute value of each context's observed points (1 for none, floored at 1e-3),
    as :func:`vitalfm.models.chronos.bolt.context_level`: from the context only, so a target cannot
    change its own weight."""
    return torch.nan_to_num(context.abs().nanmean(dim=-1), nan=1.0).clamp_min(1e-3)


def relative_pinball(
    quantiles: torch.Tensor,
    target: torch.Tensor,
    levels: tuple[float, ...],
    context: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """Mean over observed target points (of the batch, or with ``reduction="none"`` of each
    series) of 2 x the level-averaged pinball loss of quantiles [B, Q, H] against target
    [B, H] (NaN: not scored), each series divided by its :func:`context_level`."""
    observed = torch.isfinite(target)
    level = torch.tensor(levels, dtype=quantiles.dtype, device=quantiles.device).view(1, -1, 1)
    error = torch.where(observed, target, 0.0).unsqueeze(1).to(quantiles.dtype) - quantiles
    pinball = 2 * torch.maximum(level * error, (level - 1) * error).mean(dim=1)  # [B, H]
    pinball = pinball / context_level(context).to(pinball.dtype).unsqueeze(-1)
    return pooled(pinball, observed, reduction)


@MoiraiForecaster.VARIANTS.register
class Moirai2Forecaster(MoiraiForecaster):
    VARIANT: ClassVar[str] = "moirai-2"
    CONFIG_KEYS: ClassVar[frozenset[str]] = frozenset({"patch_size", "quantile_levels"})
    loss_name: ClassVar[str] = "quantile_loss"

    def __init__(self, module: nn.Module, source: ModelSource) -> None:
        super().__init__(module, source)
        self.quantile_levels = tuple(float(q) for q in module.quantile_levels)
        if 0.5 not in self.quantile_levels:
            raise ModelError(
                f"this Moirai-2 checkpoint has no median among its quantile levels "
                f"{list(self.quantile_levels)}",
                "use a checkpoint whose quantile_levels include 0.5 (the released ones do)",
            )
        self.num_predict_token = int(module.num_predict_token)

    @classmethod
    def module_class(cls) -> type[nn.Module]:
        from uni2ts.model.moirai2 import Moirai2Module

        return Moirai2Module

    @staticmethod
    def checkpoint_patch_sizes(module: nn.Module) -> tuple[int, ...]:
        return (int(module.patch_size),)

    def forecast_module(self, module: nn.Module) -> Any:
        from uni2ts.model.moirai2 import Moirai2Forecast

        return Moirai2Forecast(
            prediction_length=1,
            target_dim=1,
            feat_dynamic_real_dim=0,
            past_feat_dynamic_real_dim=0,
            context_length=1,
            module=module,
        )

    @classmethod
    def standin_module(cls) -> nn.Module:
        from uni2ts.model.moirai2 import Moirai2Module

        return Moirai2Module(**STANDIN_MOIRAI2)

    # --- training ------------------------------------------------------------------------

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """Moirai-2's pinball loss on the horizon, relative to the context's level (our objective).

        uni2ts has no Moirai-2 training code (uni2ts #231). We run the module's own training
        path (``training_mode=True``: quantiles per token in its scaled units) on the packed
        context + horizon and score each horizon patch from the token that ``Moirai2Forecast``
        decodes it from: the last context token for the first ``num_predict_token`` patches,
        then the last token of each previous block (teacher forcing: the true values stand
        where inference feeds its own quantiles). The scaler sees only the context, as at
        inference; context tokens are not scored, since their targets take part in the
        scaling (a leak the forecast does not have).

        Why not uni2ts's ``PackedQuantileMAELoss`` on the scaled target: the scaler divides by
        the context's standard deviation, floored only at sqrt(1e-5) ~ 0.003, so a flat
        context (often a single reading) turns an error of a few units into one of ~1000 and
        on the default study a few such series made ~87 % of the mean loss. We map the
        quantiles back to original units with the scaler's own loc/scale and measure
        2 x the pinball loss, averaged over the levels (the study's CRPS approximation), divided
        by the context's mean absolute value (:func:`context_level`), pooled over the
        observed horizon points, as Chronos-Bolt's loss here: every series' weight is bounded
        and the loss does not depend on a series' units. For a 12-step horizon this is the
        relative CRPS of the forecast.
        """
        context, horizon = batch.context.float(), batch.target.float()
        patch = self.patch_sizes[0]
        n_context, n_horizon = context.shape[-1], horizon.shape[-1]
        past_target, past_observed, past_is_pad = moirai2_inputs(context)
        # the horizon imputed causally after the context; inference feeds it as observed
        future_target = moirai2_inputs(torch.cat([context, horizon], dim=-1))[0][:, n_context:]
        with self._net.hparams_context(context_length=n_context, prediction_length=n_horizon):
            target, observed_mask, sample_id, time_id, variate_id, prediction_mask = (
                self._net._convert(
                    patch,
                    past_target=past_target,
                    past_observed_target=past_observed,
                    past_is_pad=past_is_pad,
                    future_target=future_target,
                    future_observed_target=torch.ones_like(future_target, dtype=torch.bool),
                    future_is_pad=torch.zeros_like(horizon, dtype=torch.bool),
                )
            )
        base = self._base_module()
        captured: dict[str, Any] = {}
        hook = base.scaler.register_forward_hook(
            lambda _m, _i, out: captured.__setitem__("loc_scale", out)
        )
        try:
            preds, _ = self.module(
                target,
                observed_mask,
                sample_id,
                time_id,
                variate_id,
                prediction_mask,
                training_mode=True,
            )
        finally:
            hook.remove()
        tokens = math.ceil(n_horizon / patch)
        last_context = preds.shape[1] - tokens - 1
        step = torch.arange(tokens, device=preds.device)
        source = last_context + self.num_predict_token * (step // self.num_predict_token)
        ahead = step % self.num_predict_token
        per_token = preds.unflatten(-1, (self.num_predict_token, -1))  # [B, L, P, Q * patch]
        levels = len(self.quantile_levels)
        scored = per_token[:, source, ahead].float().unflatten(-1, (levels, patch))
        loc, scale = (t[:, source].float().unsqueeze(-1) for t in captured["loc_scale"])
        quantiles = (scored * scale + loc).permute(0, 2, 1, 3).flatten(2)[..., :n_horizon]
        return relative_pinball(quantiles, horizon, self.quantile_levels, context, reduction)

    # --- forecasting -----------------------------------------------------------------------

    def _forecast(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        seeds: np.ndarray | None = None,  # deterministic: draws nothing
    ) -> Forecast:
        """Quantiles [B, Q, H] of ``Moirai2Forecast.forward`` on the batch.

        When one token predicts the whole horizon (up to ``num_predict_token`` patches, 64
        steps for the released model), the network runs on the context tokens only
        (:meth:`_context_token_quantiles`); longer horizons take ``Moirai2Forecast.forward``
        (it feeds its own quantiles back).
        """
        past_target, past_observed, past_is_pad = moirai2_inputs(context)
        patch = self.patch_sizes[0]
        with self._net.hparams_context(prediction_length=horizon, context_length=context.shape[-1]):
            if math.ceil(horizon / patch) <= self.num_predict_token:
                quantiles = self._context_token_quantiles(
                    past_target, past_observed, past_is_pad, horizon
                )
            else:
                quantiles = self._net(past_target, past_observed, past_is_pad)
        quantiles = quantiles.float().cpu()
        median = quantiles[:, self.quantile_levels.index(0.5)]
        return Forecast(median=median, quantiles=quantiles, quantile_levels=self.quantile_levels)

    def _context_token_quantiles(
        self,
        past_target: torch.Tensor,
        past_observed: torch.Tensor,
        past_is_pad: torch.Tensor,
        horizon: int,
    ) -> torch.Tensor:
        """What ``Moirai2Forecast.forward`` returns for a horizon of at most
        ``num_predict_token`` patches, from a pass over the context tokens alone.

        ``forward`` packs the context tokens and then the horizon's (masked) tokens, runs the
        network on all of them and reads every horizon patch off the last context token's
        output. The network is decoder-only: its attention is causal
        (``packed_causal_attention_mask``) and its scaler leaves the horizon tokens out, so no
        context token's output depends on the horizon tokens, whose own outputs ``forward``
        discards. Dropping them leaves the forecast as it is (tests/test_moirai.py checks it
        equals ``forward``) and saves their share of the compute (one token in three for the
        study's 24-step contexts and patch 16).
        """
        patch = self.patch_sizes[0]
        context_tokens = math.ceil(past_target.shape[1] / patch)
        packed = self._net._convert(patch, past_target, past_observed, past_is_pad)
        preds = self.module(*(x[:, :context_tokens] for x in packed), training_mode=False)
        per_token = preds[:, -1].unflatten(
            -1, (self.num_predict_token, len(self.quantile_levels), patch)
        )  # [B, predicted patches, Q, patch]
        tokens = math.ceil(horizon / patch)
        return per_token[:, :tokens].permute(0, 2, 1, 3).flatten(2)[..., :horizon]
