"""DLinear (Zeng et al., AAAI 2023) as a from-scratch baseline, through gluonts' own module.

``gluonts.torch.model.d_linear.module.DLinearModel`` splits the (scaled) context into a
moving-average trend and a remainder, maps each linearly to ``horizon x hidden_size``
features, and projects those to the parameters of a distribution per step (Student's t by
default), so it is probabilistic: it trains on the negative log-likelihood (gluonts' own
``distr_output.loss``) and forecasts by sampling. We call the module directly, not through
gluonts' Lightning estimator, so that it trains with this engine's Trainer like every other
run.

gluonts reads missing points through ``past_observed_values``; the values themselves must be
finite, so the context is filled first (:func:`vitalfm.models.baselines.inputs.fill_context`).

Scaling: by default (``scaling: standard``) we standardise each series ourselves as for
N-BEATS and N-HiTS (:func:`vitalfm.models.baselines.inputs.scale_context`: mean and spread of the
observed points, floored) and run gluonts' module with its scaler off, so the distribution and
its NLL are in those units. gluonts' own ``mean`` scaler (divide by the mean absolute value,
no centring) left DLinear behind persistence on the default study (it must learn each series'
level to a fraction of a percent), and its ``std`` scaler floors the spread at ~0.003, so a
flat context (SpO2 at 100 %) weighs orders of magnitude more than the rest; both stay
available as options.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vitalfm.models.base import Forecast, SeriesBatch, TimeAxis, eval_mode
from vitalfm.models.baselines.inputs import fill_context, fit_context, scale_context
from vitalfm.models.baselines.options import choice, option_error, positive_int
from vitalfm.models.baselines.scratch import ScratchForecaster
from vitalfm.models.randomness import check_seeds, sample_rows
from vitalfm.models.series_loss import pooled

DISTRIBUTIONS = ("student_t", "normal")
SCALINGS = ("standard", "mean", "std", "none")


def distribution_output(name: str) -> Any:
    from gluonts.torch.distributions import NormalOutput, StudentTOutput

    return StudentTOutput() if name == "student_t" else NormalOutput()


class DLinearForecaster(ScratchForecaster):
    family: ClassVar[str] = "dlinear"
    loss_name: ClassVar[str] = "nll"
    predicts_quantiles: ClassVar[bool] = False
    OPTIONS: ClassVar[dict[str, str]] = {
        "kernel_size": "moving-average window of the trend/remainder split, odd (default 7)",
        "hidden_size": "features per horizon step before the distribution head (default 20, "
        "gluonts' default)",
        "distribution": "student_t (default, gluonts') or normal",
        "scaling": "standard (default: ours, as N-HiTS'), or gluonts' scaler: mean (mean "
        "absolute value), std, or none",
    }
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "kernel_size": 7,
        "hidden_size": 20,
        "distribution": "student_t",
        "scaling": "standard",
    }

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        kernel = positive_int(cls.family, "kernel_size", options["kernel_size"])
        if kernel % 2 == 0:
            # gluonts pads (kernel - 1) // 2 on each side: an even kernel shortens the series
            raise option_error(cls.family, "kernel_size", kernel, "an odd positive integer")
        positive_int(cls.family, "hidden_size", options["hidden_size"])
        choice(cls.family, "distribution", options["distribution"], DISTRIBUTIONS)
        choice(cls.family, "scaling", options["scaling"], SCALINGS)
        return dict(options)

    @classmethod
    def build_module(
        cls,
        architecture: dict[str, Any],
        context_steps: int | None,
        horizon_steps: int | None,
        quantile_levels: tuple[float, ...],
    ) -> nn.Module:
        from gluonts.torch.model.d_linear.module import DLinearModel

        assert context_steps is not None and horizon_steps is not None
        scaling = architecture["scaling"]
        return DLinearModel(
            prediction_length=horizon_steps,
            context_length=context_steps,
            hidden_dimension=architecture["hidden_size"],
            distr_output=distribution_output(architecture["distribution"]),
            kernel_size=architecture["kernel_size"],
            scaling=scaling if scaling in ("mean", "std") else None,
        )

    def _past(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(filled context, observed mask, loc, scale): standardised by us for ``standard``
        (loc, scale [B, 1] undo it), else as gluonts' scaler wants them (loc 0, scale 1)."""
        device = next(self.module.parameters()).device
        assert self.context_steps is not None
        context = fit_context(context.float(), self.context_steps).to(device)
        filled, observed = fill_context(context)
        if self.architecture["scaling"] == "standard":
            loc, scale = scale_context(filled, observed)
            filled = (filled - loc) / scale
        else:
            loc, scale = torch.zeros_like(filled[:, :1]), torch.ones_like(filled[:, :1])
        return filled, observed.float(), loc, scale

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        horizon = batch.target.shape[-1]
        self._check_horizon(horizon)
        past, observed, our_loc, our_scale = self._past(batch.context)
        distr_args, loc, scale = self.module(past_target=past, past_observed_values=observed)
        distr_args = tuple(arg.float() for arg in distr_args)  # fp32 likelihood under autocast
        loc, scale = loc.float(), scale.float()
        target = (batch.target.to(past.device).float() - our_loc) / our_scale
        future_observed = torch.isfinite(target)
        if horizon < self.module.prediction_length:
            distr_args = tuple(arg[..., :horizon] for arg in distr_args)
        nll = self.module.distr_output.loss(
            target=torch.where(future_observed, target, 0.0),
            distr_args=distr_args,
            loc=loc,
            scale=scale,
        )
        return pooled(nll, future_observed, reduction)

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        """Sample gluonts' distribution: the batch's from torch's global generator, or with
        ``seeds`` (one per row) each row's alone under its seed
        (:func:`~vitalfm.models.randomness.sample_rows`)."""
        self._check_horizon(horizon)
        seeds = check_seeds(seeds, len(context))
        eval_mode(self.module)
        past, observed, our_loc, our_scale = self._past(context)
        distr_args, loc, scale = self.module(past_target=past, past_observed_values=observed)
        output = self.module.distr_output
        if seeds is None:
            distribution = output.distribution(distr_args, loc=loc, scale=scale)
            samples = distribution.sample((num_samples,))
        else:
            samples = sample_rows(
                lambda rows: output.distribution(
                    tuple(arg[rows] for arg in distr_args), loc=loc[rows], scale=scale[rows]
                ),
                seeds,
                (num_samples,),
                past.device,
            )
        samples = samples[..., :horizon]  # [S, B, H]
        samples = samples.permute(1, 0, 2) * our_scale.unsqueeze(1) + our_loc.unsqueeze(1)
        samples = samples.float().cpu()
        return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)
