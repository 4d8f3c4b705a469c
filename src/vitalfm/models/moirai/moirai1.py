"""MOIRAI 1.x: a masked encoder whose output is a mixture distribution per patch token.

Missing values inside a context are 0 and unobserved (gluonts' ``AddObservedValuesIndicator``,
as ``MoiraiForecast``'s predictor does; :func:`.inputs.moirai_inputs`). Training minimises the
model's own NLL (``PackedNLLLoss``) of the mixture on the masked horizon tokens, inputs built
as ``MoiraiForecast._val_loss`` builds them; NaN in the horizon is unobserved, not scored.
With ``patch_size: auto`` (and for stand-ins) every step trains one patch size drawn from the
model's, and the validation loss averages them all (:meth:`Moirai1Forecaster.loss`).
Forecasting runs ``MoiraiForecast`` on the whole batch, by default drawing only the horizon's
points from the same distribution (:attr:`Moirai1Forecaster.sampler`); with per-series seeds,
each series' paths are drawn under its own seed (:meth:`Moirai1Forecaster._sample_seeded`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.models.base import Forecast, ModelError, SeriesBatch
from vitalfm.models.moirai.base import AUTO, MoiraiForecaster
from vitalfm.models.moirai.inputs import moirai_inputs
from vitalfm.models.randomness import check_seeds, seeded_rows
from vitalfm.models.series_loss import check_reduction, pooled

# Stand-in: the released architecture and config format, scaled down so that the `pretrain`
# rule trains it in a few CPU minutes (moirai-1.x-R-small: d_model 384, 6 layers).
STANDIN_MOIRAI = dict(
    d_model=64,
    num_layers=2,
    patch_sizes=(8, 16, 32, 64, 128),
    max_seq_len=512,
    attn_dropout_p=0.0,
    dropout_p=0.0,
    scaling=True,
)


@MoiraiForecaster.VARIANTS.register
class Moirai1Forecaster(MoiraiForecaster):
    VARIANT: ClassVar[str] = "moirai"
    CONFIG_KEYS: ClassVar[frozenset[str]] = frozenset({"patch_sizes", "distr_output"})
    loss_name: ClassVar[str] = "nll"
    loss_pooling: ClassVar[str] = "series"
    #: "fast" (only the horizon's points drawn, same distribution; see
    #: :meth:`_horizon_parameters`) or "library" (``MoiraiForecast.forward``, its draws).
    sampler: str = "fast"

    @classmethod
    def module_class(cls) -> type[nn.Module]:
        from uni2ts.model.moirai import MoiraiModule

        return MoiraiModule

    @staticmethod
    def checkpoint_patch_sizes(module: nn.Module) -> tuple[int, ...]:
        return tuple(int(p) for p in module.patch_sizes)

    def forecast_module(self, module: nn.Module) -> Any:
        from uni2ts.model.moirai import MoiraiForecast

        return MoiraiForecast(
            prediction_length=1,
            target_dim=1,
            feat_dynamic_real_dim=0,
            past_feat_dynamic_real_dim=0,
            context_length=1,
            module=module,
            patch_size=self.patch_size,
            num_samples=1,
        )

    def auto_patch_size(self) -> int | str:
        return AUTO  # per series, see _sample_auto

    @classmethod
    def standin_module(cls) -> nn.Module:
        from uni2ts.distribution import (
            LogNormalOutput,
            MixtureOutput,
            NegativeBinomialOutput,
            NormalFixedScaleOutput,
            StudentTOutput,
        )
        from uni2ts.model.moirai import MoiraiModule

        # the released models' mixture
        distr_output = MixtureOutput(
            components=[
                StudentTOutput(),
                NormalFixedScaleOutput(),
                NegativeBinomialOutput(),
                LogNormalOutput(),
            ]
        )
        return MoiraiModule(distr_output=distr_output, **STANDIN_MOIRAI)

    # --- training ------------------------------------------------------------------------

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """The mixture's NLL (:meth:`_nll`); with several patch sizes, a training step draws
        one and the validation loss averages them, series by series for ``"none"``."""
        check_reduction(reduction)
        sizes = self.train_patch_sizes
        if len(sizes) == 1:
            return self._nll(batch, sizes[0], reduction)
        if self.module.training and torch.is_grad_enabled():
            # The Trainer seeds torch before every step, so this draw is a function of
            # (seed, step): a resumed run trains the same sizes.
            return self._nll(batch, sizes[int(torch.randint(len(sizes), ()))], reduction)
        losses = torch.stack([self._nll(batch, size, reduction) for size in sizes])
        return losses.mean() if reduction == "mean" else losses.mean(dim=0)

    def _nll(self, batch: SeriesBatch, patch_size: int, reduction: str = "mean") -> torch.Tensor:
        """The mixture's NLL per observed horizon point (uni2ts's ``PackedNLLLoss``).

        Each row of the batch is one packed sample (its own ``sample_id`` sequence; attention
        and scaling stay inside it). ``PackedNLLLoss`` averages each sample's NLL over its
        observed horizon points, then the samples: the batch's loss is the mean of the
        series' own losses, which ``reduction="none"`` returns from its per-point terms.

        Runs in float32 even under the engine's bf16 autocast: the mixture's fixed-scale
        normal component (scale 1e-3) turns bf16's rounding of its location into NLL noise.
        """
        from uni2ts.loss.packed import PackedNLLLoss

        device = batch.context.device
        with torch.autocast(device_type=device.type, enabled=False):
            packed = self.pack_moirai(batch.context.float(), batch.target.float(), patch_size)
            target, observed, sample_id, time_id, variate_id, prediction_mask = packed
            distr = self.module(
                target,
                observed,
                sample_id,
                time_id,
                variate_id,
                prediction_mask,
                torch.full_like(time_id, patch_size),
            )
            if reduction == "mean":
                return PackedNLLLoss()(
                    pred=distr,
                    target=target,
                    prediction_mask=prediction_mask,
                    observed_mask=observed,
                    sample_id=sample_id,
                    variate_id=variate_id,
                )
            terms = PackedNLLLoss()._loss_func(
                distr, target, prediction_mask, observed, sample_id, variate_id
            )  # [B, tokens, patch]
            scored = prediction_mask.unsqueeze(-1) & observed
            return pooled(terms.flatten(1), scored.flatten(1), reduction)

    def pack_moirai(
        self, context: torch.Tensor, target: torch.Tensor, patch_size: int
    ) -> tuple[torch.Tensor, ...]:
        """MOIRAI 1.x packed inputs for context [B, C] + horizon [B, H], as ``_val_loss``."""
        past_target, past_observed, past_is_pad = moirai_inputs(context)
        future_target, future_observed, _ = moirai_inputs(target)
        future_is_pad = torch.zeros(target.shape, dtype=torch.bool, device=target.device)
        with self._net.hparams_context(
            context_length=context.shape[-1], prediction_length=target.shape[-1]
        ):
            return self._net._convert(
                patch_size,
                past_target=past_target,
                past_observed_target=past_observed,
                past_is_pad=past_is_pad,
                future_target=future_target,
                future_observed_target=future_observed,
                future_is_pad=future_is_pad,
            )

    # --- forecasting -----------------------------------------------------------------------

    def _forecast(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        """With ``seeds`` (one per row) each row's paths are drawn under its own seed alone
        (:meth:`_sample_seeded`); without, the batch's from torch's global generator."""
        seeds = check_seeds(seeds, len(context))
        if self.patch_size == AUTO:
            samples = self._sample_auto(context, horizon, num_samples, seeds)
        elif seeds is None:
            samples = self._sample(context, horizon, num_samples, int(self.patch_size))
        else:
            sizes = [int(self.patch_size)] * len(context)
            samples = self._sample_seeded(context, horizon, num_samples, sizes, seeds)
        samples = samples.float().cpu()
        return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)

    def _sample(
        self, context: torch.Tensor, horizon: int, num_samples: int, patch_size: int
    ) -> torch.Tensor:
        """[B, S, H] sample paths at one patch size (see :attr:`sampler`), the whole batch's
        from torch's global generator."""
        past_target, past_observed, past_is_pad = moirai_inputs(context)
        with self._forecast_context(context, horizon, num_samples, patch_size):
            if self.sampler == "library":
                return self._net(past_target, past_observed, past_is_pad)
            params, loc, scale = self._horizon_parameters(
                past_target, past_observed, past_is_pad, patch_size
            )
            distr = self._distribution(params, loc, scale)
            paths = distr.sample(torch.Size((num_samples,)))  # [S, B, tokens, patch]
            return paths.permute(1, 0, 2, 3).flatten(2)[..., :horizon]

    def _sample_seeded(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        patch_sizes: list[int],
        seeds: np.ndarray,
    ) -> torch.Tensor:
        """[B, S, H] sample paths, row ``i``'s at ``patch_sizes[i]`` drawn under ``seeds[i]``
        alone (:func:`~vitalfm.models.randomness.seeded_rows`).

        Fast sampler: the batch's horizon distribution at each size (one forward per size
        used), then each row's slice sampled under its seed. Library sampler:
        ``MoiraiForecast.forward`` on each row alone under its seed (bit-identical to that
        forward on the one series after ``torch.manual_seed(seeds[i])``; one forward per row).
        """
        inputs = moirai_inputs(context)
        parts = []
        if self.sampler == "library":
            with seeded_rows(context.device) as reseed:
                for row, (size, seed) in enumerate(zip(patch_sizes, seeds, strict=True)):
                    with self._forecast_context(context, horizon, num_samples, size):
                        reseed(int(seed))
                        parts.append(self._net(*(t[row : row + 1] for t in inputs)))
            return torch.cat(parts)
        horizon_parameters = {}
        for size in sorted(set(patch_sizes)):
            with self._forecast_context(context, horizon, num_samples, size):
                horizon_parameters[size] = self._horizon_parameters(*inputs, size)
        with seeded_rows(context.device) as reseed:
            for row, (size, seed) in enumerate(zip(patch_sizes, seeds, strict=True)):
                distr = self._distribution(*horizon_parameters[size], rows=slice(row, row + 1))
                reseed(int(seed))
                paths = distr.sample(torch.Size((num_samples,)))  # [S, 1, tokens, patch]
                parts.append(paths.permute(1, 0, 2, 3).flatten(2)[..., :horizon])
        return torch.cat(parts)

    def _forecast_context(
        self, context: torch.Tensor, horizon: int, num_samples: int, patch_size: int
    ) -> Any:
        """``MoiraiForecast.hparams_context`` for forecasting ``context`` at ``patch_size``."""
        return self._net.hparams_context(
            prediction_length=horizon,
            context_length=context.shape[-1],
            patch_size=patch_size,
            num_samples=num_samples,
        )

    def _horizon_parameters(
        self,
        past_target: torch.Tensor,
        past_observed: torch.Tensor,
        past_is_pad: torch.Tensor,
        patch_size: int,
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """The module's predictive distribution restricted to the points that are forecast,
        as (distribution parameters, loc, scale); :meth:`_distribution` builds it.

        Why not ``MoiraiForecast.forward``: it samples the mixture at every token (context
        included) and every position of the largest patch (128), then keeps the horizon
        tokens' first ``patch_size`` positions; drawing the discarded gamma and Poisson
        variates was ~90 % of forecasting time. We run the same forward (``_get_distr``),
        capture the scaler's loc/scale and ``param_proj``'s parameters with forward hooks,
        keep the horizon's and rebuild the distribution with the module's own
        ``distr_output.distribution``: the same distribution, fewer (so different) draws.
        Parameters of three or more dimensions are [batch, tokens, patch, ...]; the others
        (the fixed-scale normal's scale) are constants.
        Call inside ``hparams_context`` (context and prediction lengths set).
        """
        from torch.utils._pytree import tree_map

        base = self._base_module()
        captured: dict[str, Any] = {}
        hooks = [
            base.scaler.register_forward_hook(
                lambda _m, _i, out: captured.__setitem__("loc_scale", out)
            ),
            base.param_proj.register_forward_hook(
                lambda _m, _i, out: captured.__setitem__("params", out)
            ),
        ]
        try:
            self._net._get_distr(patch_size, past_target, past_observed, past_is_pad)
        finally:
            for hook in hooks:
                hook.remove()
        first = self._net.context_token_length(patch_size)  # univariate: context tokens first
        tokens = slice(first, first + self._net.prediction_token_length(patch_size))
        params = tree_map(
            lambda t: t[:, tokens, :patch_size] if t.dim() >= 3 else t, captured["params"]
        )
        loc, scale = (t[:, tokens] for t in captured["loc_scale"])
        return params, loc, scale

    def _distribution(
        self, params: Any, loc: torch.Tensor, scale: torch.Tensor, rows: slice | None = None
    ) -> Any:
        """The module's ``distr_output`` distribution of :meth:`_horizon_parameters`' output,
        restricted to the batch's ``rows`` if given."""
        from torch.utils._pytree import tree_map

        if rows is not None:
            params = tree_map(lambda t: t[rows] if t.dim() >= 3 else t, params)
            loc, scale = loc[rows], scale[rows]
        return self._base_module().distr_output.distribution(params, loc=loc, scale=scale)

    def _sample_auto(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        seeds: np.ndarray | None = None,
    ) -> torch.Tensor:
        """``MoiraiForecast``'s "auto": per series, the paths of the patch size whose NLL is
        lowest on the context's last ``horizon`` points given the points before them.

        uni2ts's own "auto" needs ``context_length + horizon`` points and then forecasts from
        only the last ``context_length``; we score on the same split but forecast from the
        whole context (with the "library" sampler the random draws are the same, size by size).
        With ``seeds``, row ``i``'s paths are drawn only at its chosen size, under ``seeds[i]``
        (:meth:`_sample_seeded`). The NLL itself is random-free: the mixture's ``log_prob``
        draws placeholder values only where it then returns -inf.
        """
        length = context.shape[-1]
        if length <= horizon:
            raise ModelError(
                f"patch_size 'auto' needs contexts longer than the horizon ({length} <= {horizon})",
                "set a fixed patch_size in models.<name>.options",
            )
        past_target, past_observed, past_is_pad = moirai_inputs(context)
        losses, paths = [], []
        for size in self.patch_sizes:
            with self._net.hparams_context(
                context_length=length - horizon, prediction_length=horizon
            ):
                losses.append(self._net._val_loss(size, past_target, past_observed, past_is_pad))
            if seeds is None:
                paths.append(self._sample(context, horizon, num_samples, size))
        best = torch.stack(losses).argmin(dim=0)
        if seeds is not None:
            sizes = [self.patch_sizes[int(i)] for i in best]
            return self._sample_seeded(context, horizon, num_samples, sizes, seeds)
        return torch.stack(paths)[best, torch.arange(len(best), device=best.device)]
