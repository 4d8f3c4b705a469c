"""The MOIRAI family: MOIRAI 1.x and Moirai-2, through uni2ts.

Checkpoints (hub ids, local folders and our stand-ins alike) are uni2ts's
``PyTorchModelHubMixin`` format, ``config.json`` + ``model.safetensors``. The variant is read
from ``config.json`` (MOIRAI 1.x: ``patch_sizes`` + ``distr_output``; Moirai-2: ``patch_size`` +
``quantile_levels``) and the weights are opened with that class's own ``from_pretrained``.

Inputs are packed exactly as uni2ts's forecast modules pack them (``MoiraiForecast._convert`` /
``Moirai2Forecast._convert``), and forecasting runs those modules on the whole batch (MOIRAI
1.x by default draws only the horizon's points from the same distribution, see
:attr:`MoiraiForecaster.sampler`). Missing values follow each variant's released inference
code, with one rule shared by both: NaN before a row's first value is *padding* (a shorter
history, ``past_is_pad``), as gluonts' instance splitter pads a short series, not a run of
missing points.

- MOIRAI 1.x: other NaN are unobserved and filled with 0 (gluonts' ``AddObservedValuesIndicator``
  as ``MoiraiForecast``'s predictor does). Training minimises the model's own NLL
  (``PackedNLLLoss``) of the mixture distribution on the masked horizon tokens, inputs built as
  ``MoiraiForecast._val_loss`` builds them; NaN in the horizon is unobserved, not scored. With
  ``patch_size: auto`` (and for stand-ins) every step trains one patch size drawn from the
  model's, and the validation loss averages them all (:meth:`MoiraiForecaster.loss`).
- Moirai-2: other NaN get the causal mean and stay unobserved (gluonts'
  ``CausalMeanValueImputation``, as ``Moirai2Forecast``'s predictor; see :func:`moirai2_inputs`
  for why not ``Moirai2Forecast.predict``). uni2ts ships no Moirai-2 training code (uni2ts
  #231), so the objective is ours, built from the model's own training path
  (``training_mode=True``), its pinball loss measured relative to the context's level rather
  than in the scaler's units: see :meth:`MoiraiForecaster._quantile_loss`.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from vitalfm.models.base import (
    Forecast,
    Forecaster,
    ModelError,
    ModelSource,
    SeriesBatch,
    TargetModules,
    TimeAxis,
)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"  # the only weight file uni2ts's loader reads from a folder
HUB_EXAMPLE = "Salesforce/moirai-1.1-R-small"

# 6 h contexts (24 steps of 15 min) and 3 h horizons (12 steps): patch 16 gives two context
# tokens and one horizon token. MOIRAI's pretraining used 32-128 for minute-level data, which
# would leave a 24-step context a single token; 8 triples the attention cost for little gain.
DEFAULT_PATCH_SIZE = 16
AUTO = "auto"

# Stand-ins: the released architectures and config formats, scaled down so that the
# `pretrain` rule trains them in a few CPU minutes. Released sizes for comparison:
# moirai-1.x-R-small d_model 384, 6 layers; moirai-2.0-R-small d_model 384, d_ff 1024, 6 layers,
# patch 16, 4 predicted tokens.
_STANDIN_MOIRAI = dict(
    d_model=64,
    num_layers=2,
    patch_sizes=(8, 16, 32, 64, 128),
    max_seq_len=512,
    attn_dropout_p=0.0,
    dropout_p=0.0,
    scaling=True,
)
_STANDIN_MOIRAI2 = dict(
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


def _module_classes() -> dict[str, type[nn.Module]]:
    from uni2ts.model.moirai import MoiraiModule
    from uni2ts.model.moirai2 import Moirai2Module

    return {"moirai": MoiraiModule, "moirai-2": Moirai2Module}


def _variant_of(module: nn.Module) -> str:
    for variant, cls in _module_classes().items():
        if type(module) is cls:
            return variant
    raise ModelError(
        f"{type(module).__name__} is not a MOIRAI module",
        "use a MOIRAI 1.x (MoiraiModule) or Moirai-2 (Moirai2Module) checkpoint",
    )


def _variant_from_config(config: dict[str, Any], where: str) -> str:
    """The variant a checkpoint's config.json describes; ModelError for any other model."""
    if {"patch_sizes", "distr_output"} <= set(config):
        variant = "moirai"
    elif {"patch_size", "quantile_levels"} <= set(config):
        variant = "moirai-2"
    else:
        hint = " (it looks like a Chronos checkpoint)" if "chronos_config" in config else ""
        raise ModelError(
            f"{where} is not a MOIRAI checkpoint{hint}: its config.json has neither "
            "patch_sizes + distr_output (MOIRAI 1.x) nor patch_size + quantile_levels (Moirai-2)",
            "use `family: moirai` only for MOIRAI 1.0/1.1 or Moirai-2.0 checkpoints "
            "(Chronos checkpoints take `family: chronos`)",
        )
    cls = _module_classes()[variant]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    extra = sorted(set(config) - accepted)
    if extra:
        raise ModelError(
            f"{where} has settings {', '.join(extra)} that {cls.__name__} does not take "
            "(a MOIRAI-MoE or other uni2ts model?)",
            "use a MOIRAI 1.0/1.1 (Salesforce/moirai-1.1-R-*) or Moirai-2.0 "
            "(Salesforce/moirai-2.0-R-small) checkpoint",
        )
    return variant


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


def check_local_checkpoint(path: Path) -> str:
    """The variant of a local folder; a clear ModelError if it cannot be a MOIRAI checkpoint."""
    if not path.is_dir():
        raise ModelError(
            f"model folder {path} does not exist",
            "point `source: {path: ...}` at a folder holding config.json and model.safetensors",
        )
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (path / name).is_file()]
    if missing:
        raise ModelError(
            f"model folder {path} lacks {', '.join(missing)}",
            "copy the complete released checkpoint there (e.g. `huggingface-cli download "
            f"{HUB_EXAMPLE} --local-dir <folder>` on a machine with internet)",
        )
    where = f"model folder {path}"
    return _variant_from_config(_read_config(path / CONFIG_FILE, where), where)


def _hub_error(repo: str, err: BaseException) -> ModelError:
    return ModelError(
        f"cannot load hub model {repo!r}: it is not in the local Hugging Face cache and the hub "
        f"cannot be reached or has no such model ({type(err).__name__})",
        "check the id; offline, download it elsewhere (`huggingface-cli download "
        f"{repo} --local-dir <folder>`) and set `source: {{path: <folder>}}`",
    )


def _hub_variant(repo: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        config_path = hf_hub_download(repo_id=repo, filename=CONFIG_FILE)
    except (OSError, ValueError, HfHubHTTPError) as err:
        raise _hub_error(repo, err) from None
    where = f"hub model {repo!r}"
    return _variant_from_config(_read_config(Path(config_path), where), where)


# --- inputs -----------------------------------------------------------------------------------


def _leading_gap(values: torch.Tensor) -> torch.Tensor:
    """True before each row's first finite value (padding: a shorter history)."""
    return torch.cumsum(torch.isfinite(values), dim=-1) == 0


def moirai_inputs(
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MOIRAI 1.x ``(target [B,T,1], observed [B,T,1], is_pad [B,T])`` from a NaN-holed [B, T].

    As gluonts feeds ``MoiraiForecast``: missing values are 0 and unobserved; the leading gap
    is padding (target 0, unobserved), as the instance splitter pads a shorter series.
    """
    observed = torch.isfinite(values)
    target = torch.where(observed, values, torch.zeros((), dtype=values.dtype))
    return target.unsqueeze(-1), observed.unsqueeze(-1), _leading_gap(values)


def moirai2_inputs(
    values: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Moirai-2 ``(target [B,T,1], observed [B,T,1], is_pad [B,T])`` from a NaN-holed [B, T].

    What ``Moirai2Forecast``'s gluonts predictor does to a series that starts at its first
    value, batched: gluonts' ``CausalMeanValueImputation`` (carry the last value forward, then
    replace each missing point by the mean of the carried-forward series before it; missing
    points stay unobserved), and the leading gap padded as for MOIRAI 1.x (0, unobserved).

    ``Moirai2Forecast.predict`` (numpy arrays) differs: uni2ts's ``LastValueImputation``
    transposes its (T, 1) arrays, so there every missing value becomes 0; we follow the
    predictor, which imputes as documented.
    """
    observed = torch.isfinite(values)
    is_pad = _leading_gap(values)
    length = values.shape[-1]
    positions = torch.arange(length, device=values.device).expand_as(values)
    first = torch.where(observed, positions, length).amin(dim=-1, keepdim=True)
    last_seen = torch.where(observed, positions, -1).cummax(dim=-1).values.clamp_min(0)
    carried = torch.where(is_pad, 0.0, values.gather(-1, last_seen).double())
    # float64, as gluonts' division by float indices
    before = torch.cumsum(carried, dim=-1) - carried
    causal_mean = before / (positions - first).clamp_min(1)
    imputed = torch.where(observed, values.double(), torch.where(is_pad, 0.0, causal_mean))
    return imputed.to(values.dtype).unsqueeze(-1), observed.unsqueeze(-1), is_pad


def context_level(context: torch.Tensor) -> torch.Tensor:
    """[B] mean absolute value of each context's observed points (1 for none, floored at 1e-3),
    as :func:`vitalfm.models.chronos.context_level`: from the context only, so a target cannot
    change its own weight."""
    return torch.nan_to_num(context.abs().nanmean(dim=-1), nan=1.0).clamp_min(1e-3)


def relative_pinball(
    quantiles: torch.Tensor,
    target: torch.Tensor,
    levels: tuple[float, ...],
    context: torch.Tensor,
) -> torch.Tensor:
    """Mean over observed target points of 2 x the level-averaged pinball loss of quantiles
    [B, Q, H] against target [B, H] (NaN: not scored), each series divided by its
    :func:`context_level`."""
    observed = torch.isfinite(target)
    level = torch.tensor(levels, dtype=quantiles.dtype, device=quantiles.device).view(1, -1, 1)
    error = torch.where(observed, target, 0.0).unsqueeze(1).to(quantiles.dtype) - quantiles
    pinball = 2 * torch.maximum(level * error, (level - 1) * error).mean(dim=1)  # [B, H]
    pinball = pinball / context_level(context).to(pinball.dtype).unsqueeze(-1)
    return (pinball * observed).sum() / observed.sum().clamp_min(1)


# --- the forecaster ----------------------------------------------------------------------------


class MoiraiForecaster(Forecaster):
    family: ClassVar[str] = "moirai"
    #: MOIRAI 1.x paths: "fast" (only the horizon's points drawn, same distribution; see
    #: :meth:`_horizon_distribution`) or "library" (``MoiraiForecast.forward``, its draws).
    sampler: str = "fast"
    OPTIONS: ClassVar[dict[str, str]] = {
        "patch_size": (
            "MOIRAI 1.x: one of the checkpoint's patch sizes (8, 16, 32, 64, 128 for the "
            "released models) or 'auto' (per series, the size with the lowest NLL on the last "
            "horizon-length stretch of its context, as MoiraiForecast's 'auto'); default 16. "
            "Moirai-2 has one patch size (16): only that or 'auto' is accepted."
        )
    }

    def __init__(self, module: nn.Module, source: ModelSource) -> None:
        variant = _variant_of(module)
        super().__init__(module, source, variant)
        if variant == "moirai":
            from uni2ts.model.moirai import MoiraiForecast

            self.patch_sizes = tuple(int(p) for p in module.patch_sizes)
            self.patch_size: int | str = (
                DEFAULT_PATCH_SIZE
                if DEFAULT_PATCH_SIZE in self.patch_sizes
                else self.patch_sizes[0]
            )
            # The wrapper whose _convert/forward we call; it holds no weights of its own.
            self._net: Any = MoiraiForecast(
                prediction_length=1,
                target_dim=1,
                feat_dynamic_real_dim=0,
                past_feat_dynamic_real_dim=0,
                context_length=1,
                module=module,
                patch_size=self.patch_size,
                num_samples=1,
            )
            self.loss_name = "nll"
        else:
            from uni2ts.model.moirai2 import Moirai2Forecast

            self.patch_sizes = (int(module.patch_size),)
            self.patch_size = self.patch_sizes[0]
            self._net = Moirai2Forecast(
                prediction_length=1,
                target_dim=1,
                feat_dynamic_real_dim=0,
                past_feat_dynamic_real_dim=0,
                context_length=1,
                module=module,
            )
            self.quantile_levels = tuple(float(q) for q in module.quantile_levels)
            if 0.5 not in self.quantile_levels:
                raise ModelError(
                    f"this Moirai-2 checkpoint has no median among its quantile levels "
                    f"{list(self.quantile_levels)}",
                    "use a checkpoint whose quantile_levels include 0.5 (the released ones do)",
                )
            self.num_predict_token = int(module.num_predict_token)
            self.loss_name = "quantile_loss"
        #: Patch sizes the loss trains with: one, or several (a training step draws one, the
        #: validation loss averages them). "auto" trains every size; so do stand-ins.
        self.train_patch_sizes: tuple[int, ...] = (int(self.patch_size),)

    def apply_options(self, options: dict[str, Any]) -> None:
        if "patch_size" not in options:
            return
        value = options["patch_size"]
        allowed = ", ".join(map(str, self.patch_sizes))
        if value == AUTO:
            self.patch_size = AUTO if self.variant == "moirai" else self.patch_sizes[0]
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
        from safetensors import SafetensorError

        location = source.location
        if source.hub is None:
            variant = check_local_checkpoint(Path(location))
        else:
            variant = _hub_variant(location)
        module_class = _module_classes()[variant]
        try:
            # uni2ts's loader prints "Loading weights from local directory"; strict: a
            # checkpoint lacking weights must fail, not leave them random.
            with contextlib.redirect_stdout(io.StringIO()):
                module = module_class.from_pretrained(location, strict=True)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError, SafetensorError) as err:
            if source.hub is not None and isinstance(err, OSError):
                raise _hub_error(location, err) from None
            raise ModelError(
                f"cannot load the {variant} checkpoint in {location}: {err}",
                "check that config.json and model.safetensors come from the same complete, "
                "uncorrupted released checkpoint",
            ) from None
        module.to(device)
        return cls(module, source)

    @classmethod
    def standin_names(cls) -> tuple[str, ...]:
        return ("moirai", "moirai-2")

    @classmethod
    def standin(cls, name: str, horizon: int, seed: int) -> MoiraiForecaster:
        """A randomly initialised small member of the named variant, in the released format.

        The MOIRAI 1.x stand-in pretrains every patch size (one drawn per step), as MOIRAI's
        pretraining covers all of them; ``horizon`` is not part of either architecture.
        """
        del horizon
        torch.manual_seed(seed)
        if name == "moirai":
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
            module: nn.Module = MoiraiModule(distr_output=distr_output, **_STANDIN_MOIRAI)
        elif name == "moirai-2":
            from uni2ts.model.moirai2 import Moirai2Module

            module = Moirai2Module(**_STANDIN_MOIRAI2)
        else:
            raise ModelError(
                f"unknown MOIRAI stand-in {name!r}", f"use one of {', '.join(cls.standin_names())}"
            )
        module.eval()
        forecaster = cls(module, ModelSource(standin=name))
        forecaster.train_patch_sizes = forecaster.patch_sizes
        return forecaster

    def save_pretrained(self, directory: Path) -> None:
        if hasattr(self.module, "peft_config"):
            raise ModelError(
                "cannot save an adapter-wrapped model as a full checkpoint",
                "merge the adapter first (vitalfm.models.adaptation.merge_for_inference)",
            )
        self.module.save_pretrained(Path(directory))

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

    # --- training ------------------------------------------------------------------------

    def loss(self, batch: SeriesBatch) -> torch.Tensor:
        if self.variant == "moirai-2":
            return self._quantile_loss(batch)
        sizes = self.train_patch_sizes
        if len(sizes) == 1:
            return self._nll(batch, sizes[0])
        if self.module.training and torch.is_grad_enabled():
            # The Trainer seeds torch before every step, so this draw is a function of
            # (seed, step): a resumed run trains the same sizes.
            return self._nll(batch, sizes[int(torch.randint(len(sizes), ()))])
        return torch.stack([self._nll(batch, size) for size in sizes]).mean()

    def _nll(self, batch: SeriesBatch, patch_size: int) -> torch.Tensor:
        """The mixture's mean NLL per observed horizon point (uni2ts's ``PackedNLLLoss``).

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
            return PackedNLLLoss()(
                pred=distr,
                target=target,
                prediction_mask=prediction_mask,
                observed_mask=observed,
                sample_id=sample_id,
                variate_id=variate_id,
            )

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

    def _quantile_loss(self, batch: SeriesBatch) -> torch.Tensor:
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
        base = (
            self.module.get_base_model() if hasattr(self.module, "get_base_model") else self.module
        )
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
        return relative_pinball(quantiles, horizon, self.quantile_levels, context)

    # --- forecasting -----------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(self.module.parameters()).device

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,  # MOIRAI has no calendar features
    ) -> Forecast:
        self.module.eval()
        device = self._device()
        if self._net.device != device:  # Moirai2Forecast places its own tensors on it
            self._net.to(device)
        context = context.float().to(device)
        if self.variant == "moirai-2":
            return self._predict_quantiles(context, horizon)
        if self.patch_size == AUTO:
            samples = self._sample_auto(context, horizon, num_samples)
        else:
            samples = self._sample(context, horizon, num_samples, int(self.patch_size))
        samples = samples.float().cpu()
        return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)

    def _sample(
        self, context: torch.Tensor, horizon: int, num_samples: int, patch_size: int
    ) -> torch.Tensor:
        """[B, S, H] sample paths at one patch size (see :attr:`sampler`)."""
        past_target, past_observed, past_is_pad = moirai_inputs(context)
        with self._net.hparams_context(
            prediction_length=horizon,
            context_length=context.shape[-1],
            patch_size=patch_size,
            num_samples=num_samples,
        ):
            if self.sampler == "library":
                return self._net(past_target, past_observed, past_is_pad)
            distr = self._horizon_distribution(past_target, past_observed, past_is_pad, patch_size)
            paths = distr.sample(torch.Size((num_samples,)))  # [S, B, tokens, patch]
            return paths.permute(1, 0, 2, 3).flatten(2)[..., :horizon]

    def _horizon_distribution(
        self,
        past_target: torch.Tensor,
        past_observed: torch.Tensor,
        past_is_pad: torch.Tensor,
        patch_size: int,
    ) -> Any:
        """The module's predictive distribution restricted to the points that are forecast.

        Why not ``MoiraiForecast.forward``: it samples the mixture at every token (context
        included) and every position of the largest patch (128), then keeps the horizon
        tokens' first ``patch_size`` positions; drawing the discarded gamma and Poisson
        variates was ~90 % of forecasting time. We run the same forward (``_get_distr``),
        capture the scaler's loc/scale and ``param_proj``'s parameters with forward hooks,
        keep the horizon's and rebuild the distribution with the module's own
        ``distr_output.distribution``: the same distribution, fewer (so different) draws.
        Call inside ``hparams_context`` (context and prediction lengths set).
        """
        from torch.utils._pytree import tree_map

        base = (
            self.module.get_base_model() if hasattr(self.module, "get_base_model") else self.module
        )
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
        return base.distr_output.distribution(params, loc=loc, scale=scale)

    def _sample_auto(self, context: torch.Tensor, horizon: int, num_samples: int) -> torch.Tensor:
        """``MoiraiForecast``'s "auto": per series, the paths of the patch size whose NLL is
        lowest on the context's last ``horizon`` points given the points before them.

        uni2ts's own "auto" needs ``context_length + horizon`` points and then forecasts from
        only the last ``context_length``; we score on the same split but forecast from the
        whole context (with the "library" sampler the random draws are the same, size by size).
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
            paths.append(self._sample(context, horizon, num_samples, size))
        best = torch.stack(losses).argmin(dim=0)
        return torch.stack(paths)[best, torch.arange(len(best), device=best.device)]

    def _predict_quantiles(self, context: torch.Tensor, horizon: int) -> Forecast:
        """``Moirai2Forecast.forward`` on the batch: quantiles [B, Q, H]."""
        past_target, past_observed, past_is_pad = moirai2_inputs(context)
        with self._net.hparams_context(prediction_length=horizon, context_length=context.shape[-1]):
            quantiles = self._net(past_target, past_observed, past_is_pad)
        quantiles = quantiles.float().cpu()
        median = quantiles[:, self.quantile_levels.index(0.5)]
        return Forecast(median=median, quantiles=quantiles, quantile_levels=self.quantile_levels)


FORECASTER = MoiraiForecaster
