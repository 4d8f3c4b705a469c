"""The Lag-Llama family: a decoder-only transformer with one token per time step.

Implemented here (see :mod:`.network`, :mod:`.features`, :mod:`.checkpoint`) rather than
through the upstream package, whose pins and checkpoint loading do not fit this stack. The
released ``lag-llama.ckpt`` (Hub: ``time-series-foundation-models/Lag-Llama``), stand-ins
and fully fine-tuned models share one file format and one loader.

Each token carries the lags of its time step, the series' scale statistics and calendar
features; the network emits a Student-t per token for the next value. Training is
teacher-forced NLL; forecasting samples paths autoregressively.

How a batch becomes model input, as gluonts' InstanceSplitter builds it upstream:

- the *past* is the last ``context_length + max(lags)`` points of the context (1,124 for the
  released model); a shorter context is left-padded with zeros marked unobserved (option
  ``pad_short_context``); NaN points count as 0, unobserved;
- loc/scale come from the observed past (robust: median and IQR) and are not recomputed;
- the model sees the last ``context_length`` points as tokens; all earlier points only feed
  the lags.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.distributions import StudentT

from vitalfm.models.base import (
    Forecast,
    Forecaster,
    ModelError,
    ModelSource,
    SeriesBatch,
    TargetModules,
    TimeAxis,
    dominant_dtype,
    eval_mode,
)
from vitalfm.models.lag_llama.checkpoint import (
    CHECKPOINT_FILE,
    DEFAULT_HUB_REPO,
    find_checkpoint_file,
    read_checkpoint,
    write_checkpoint,
)
from vitalfm.models.lag_llama.features import (
    calendar_features,
    released_lags,
    scale_stats,
    token_features,
)
from vitalfm.models.lag_llama.network import (
    LagLlamaConfig,
    LagLlamaNetwork,
    RopeScaling,
    SamplingCache,
)
from vitalfm.models.randomness import check_seeds, row_generators, row_normals, row_student_t
from vitalfm.models.series_loss import pooled

__all__ = ["LagLlamaForecaster", "released_model_kwargs", "standin_model_kwargs"]

ATTENTION = ("q_proj", "kv_proj", "attn.c_proj")  # a bare c_proj would also hit the MLP
FFN = ("c_fc1", "c_fc2", "mlp.c_proj")


def released_model_kwargs() -> dict[str, Any]:
    """The plain ``model_kwargs`` of the released checkpoint (``configs/lag_llama.json``)."""
    return {
        "input_size": 1,
        "context_length": 32,
        "max_context_length": 2048,
        "lags_seq": released_lags(),
        "n_layer": 8,
        "n_embd_per_head": 16,
        "n_head": 9,
        "scaling": "robust",
        "num_parallel_samples": 100,
        "rope_scaling": None,
        "time_feat": True,
        "dropout": 0.0,
    }


def standin_model_kwargs() -> dict[str, Any]:
    """The stand-in: the released features (84 lags, 92 inputs, robust scaling, calendar
    features, context 32) with 4 layers of 4 heads x 16 instead of 8 of 9 x 16 (0.27 M vs
    2.45 M parameters), so that the ``pretrain`` rule trains it in 1-2 CPU minutes."""
    return {**released_model_kwargs(), "n_layer": 4, "n_head": 4, "n_embd_per_head": 16}


@dataclass(frozen=True)
class LagLlamaSettings:
    """Resolved ``models.<name>.options`` (None: decided per call, see OPTIONS)."""

    use_kv_cache: bool = True
    #: None: the checkpoint's own setting (upstream's default); "auto": stretch linearly when
    #: context + horizon exceeds the trained context; else this scaling.
    rope_scaling: RopeScaling | Literal["auto"] | None = None
    pad_short_context: bool = True
    context_length: int | None = None
    minimum_scale: float | None = None


def _flag(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ModelError(
            f"option {key} = {value!r} is not true or false", f"write `{key}: true` or false"
        )
    return value


class LagLlamaForecaster(Forecaster):
    family: ClassVar[str] = "lag_llama"
    loss_name: ClassVar[str] = "nll"
    OPTIONS: ClassVar[dict[str, str]] = {
        "use_kv_cache": "sample with a key/value cache (default true); false recomputes every "
        "token at every step (the reference path; same samples for a seed, much slower)",
        "rope_scaling": "{type: linear|dynamic|nope, factor: >= 1}, null or none for no "
        "scaling, or auto: none when context_length + horizon fits the trained "
        "context_length, otherwise linear by their ratio, as upstream's demo notebook sets it "
        "(default: the checkpoint's own setting, none for the released model, as upstream's "
        "LagLlamaEstimator does)",
        "pad_short_context": "left-pad contexts shorter than context_length + the largest lag "
        "with unobserved zeros, as gluonts does (default true); false refuses them",
        "context_length": "tokens the model sees (default: the checkpoint's context_length, 32 "
        "for the released model); earlier points feed only the lag features",
        "minimum_scale": "floor of the scaler's scale (default: the scaler's own, 1e-10 for "
        "robust); a larger floor keeps flat contexts (SpO2 at 100) from dominating the NLL",
    }

    def __init__(
        self, network: LagLlamaNetwork, source: ModelSource, hyper_parameters: dict[str, Any]
    ) -> None:
        super().__init__(network, source, "lag-llama")
        self.config: LagLlamaConfig = network.config
        self.hyper_parameters = dict(hyper_parameters)
        self.settings = LagLlamaSettings()

    # --- options ------------------------------------------------------------------------------

    def apply_options(self, options: dict[str, Any]) -> None:
        settings = LagLlamaSettings()
        for key, value in options.items():
            if key in ("use_kv_cache", "pad_short_context"):
                settings = replace(settings, **{key: _flag(key, value)})
            elif key == "rope_scaling":
                settings = replace(settings, rope_scaling=self._rope_option(value))
            elif key == "context_length":
                limit = self.config.max_context_length
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
                    raise ModelError(
                        f"option context_length = {value!r} is not an integer in 1..{limit}",
                        f"set it to e.g. {self.config.context_length} (the trained length), "
                        "64 or 128",
                    )
                settings = replace(settings, context_length=value)
            elif key == "minimum_scale":
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not (math.isfinite(value) and value > 0)
                ):
                    raise ModelError(
                        f"option minimum_scale = {value!r} is not a positive number",
                        "set it to e.g. 1e-3, or remove it for the scaler's own floor",
                    )
                settings = replace(settings, minimum_scale=float(value))
        self.settings = settings

    @staticmethod
    def _rope_option(value: Any) -> RopeScaling | Literal["auto"]:
        if value == "auto":
            return "auto"
        if value is None or value == "none":
            return RopeScaling()
        try:
            if not isinstance(value, Mapping):
                raise ValueError(f"expected a mapping, got {type(value).__name__}")
            unknown = sorted(set(value) - {"type", "factor"})
            if unknown:
                raise ValueError(f"unknown key(s) {', '.join(map(str, unknown))}")
            return RopeScaling.from_dict(value)
        except ValueError as err:
            raise ModelError(
                f"option rope_scaling = {value!r}: {err}",
                "write `rope_scaling: {type: linear, factor: 2.0}` (type linear, dynamic or "
                "nope; factor >= 1), null for none, or auto",
            ) from None

    @property
    def context_length(self) -> int:
        """Tokens of context the model sees."""
        return self.settings.context_length or self.config.context_length

    def rope_scaling(self, horizon: int) -> RopeScaling:
        """The RoPE scaling for ``context_length + horizon`` tokens (see OPTIONS)."""
        setting = self.settings.rope_scaling
        if setting is None:
            return self.config.rope_scaling
        if setting == "auto":
            span, trained = self.context_length + horizon, self.config.context_length
            return RopeScaling() if span <= trained else RopeScaling("linear", span / trained)
        return setting

    def rope_rule(self) -> dict[str, Any]:
        """How the RoPE scaling is chosen, for the run's metadata."""
        setting = self.settings.rope_scaling
        if setting == "auto":
            return {"rule": "auto", "trained_context_length": self.config.context_length}
        if setting is None:
            return {"rule": "checkpoint", "scaling": self.config.rope_scaling.to_dict()}
        return {"rule": "option", "scaling": setting.to_dict()}

    # --- loading and saving ---------------------------------------------------------------

    @classmethod
    def load(cls, source: ModelSource, device: torch.device) -> LagLlamaForecaster:
        path = _download(source.hub) if source.hub else find_checkpoint_file(source.location)
        contents = read_checkpoint(path, map_location=device)
        # As upstream's Lightning load: the network is built in float32 and the stored weights
        # (float32 in the released file) are copied in, on every device (load_dtype's rule).
        network = LagLlamaNetwork(contents.config)
        network.load_state_dict(contents.state_dict, strict=True)
        network.to(device).eval()
        forecaster = cls(network, source, contents.hyper_parameters)
        forecaster.checkpoint_dtype = dominant_dtype(contents.state_dict.values())
        return forecaster

    @classmethod
    def standin_names(cls) -> tuple[str, ...]:
        return ("lag-llama",)

    @classmethod
    def standin(cls, name: str, horizon: int, seed: int) -> LagLlamaForecaster:
        """A randomly initialised small member of the released architecture."""
        if name not in cls.standin_names():
            raise ModelError(
                f"unknown Lag-Llama stand-in {name!r}",
                f"use one of {', '.join(cls.standin_names())}",
            )
        torch.manual_seed(seed)
        config = LagLlamaConfig.from_model_kwargs(standin_model_kwargs())
        network = LagLlamaNetwork(config).eval()
        hyper = {"context_length": config.context_length, "prediction_length": horizon}
        return cls(network, ModelSource(standin=name), hyper)

    def write_pretrained(self, directory: Path) -> None:
        """``directory/lag-llama.ckpt`` in the released Lightning layout."""
        write_checkpoint(
            directory / CHECKPOINT_FILE,
            self.config,
            self.module.state_dict(),
            self.hyper_parameters,
        )

    # --- adaptation targets ----------------------------------------------------------------

    def target_modules(self) -> TargetModules:
        return TargetModules(
            attention=ATTENTION,
            ffn=FFN,
            norms=(r"transformer\.h\.\d+\.rms_[12]",),  # the blocks' RMSNorms, not ln_f
            bias_linears=(*ATTENTION, *FFN),
        )

    # --- inputs -------------------------------------------------------------------------------

    def _past(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(values, observed) [B, context_length + max lag] and the data index of token 0."""
        tokens, max_lag = self.context_length, self.config.max_lag
        needed = tokens + max_lag
        points = context.shape[1]
        finite = torch.isfinite(context)
        values = torch.where(finite, context, 0.0)
        observed = finite.to(values.dtype)
        if points >= needed:
            values, observed = values[:, -needed:], observed[:, -needed:]
        elif not self.settings.pad_short_context:
            raise ModelError(
                f"context of {points} points is shorter than the {tokens}+{max_lag} the lags "
                "need without padding",
                "set option pad_short_context: true (left-pad with unobserved zeros, as gluonts "
                f"does), or give contexts of at least {needed} points",
            )
        else:
            pad = needed - points
            values = torch.nn.functional.pad(values, (pad, 0))
            observed = torch.nn.functional.pad(observed, (pad, 0))
        return values, observed, points - tokens

    def _calendar(
        self, time: TimeAxis | None, rows: int, length: int, offset: int, device: torch.device
    ) -> torch.Tensor | None:
        if not self.config.time_feat:
            return None
        if time is None:
            raise ModelError(
                "this Lag-Llama model uses calendar features but the batch has no time axis",
                "pass `time` (a TimeAxis) to predict / SeriesBatch; the engine's data always does",
            )
        if len(time.start_s) != rows:
            raise ModelError(
                f"the time axis has {len(time.start_s)} rows for a batch of {rows}",
                "give one start time per series",
            )
        return torch.from_numpy(calendar_features(time, length, offset)).to(device)

    def _scale(
        self, values: torch.Tensor, observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return scale_stats(self.config.scaling, values, observed, self.settings.minimum_scale)

    # --- training ---------------------------------------------------------------------------

    def loss(self, batch: SeriesBatch, reduction: str = "mean") -> torch.Tensor:
        """Teacher-forced Student-t NLL over the last C-1 context and all H target points
        (observed ones): a series' own loss pools its scored context and target points."""
        context, target = batch.context.float(), batch.target.float()
        rows, horizon = target.shape
        values, observed, offset = self._past(context)
        loc, scale = self._scale(values, observed)
        target_observed = torch.isfinite(target)
        target_values = torch.where(target_observed, target, 0.0)
        max_lag, tokens = self.config.max_lag, self.context_length + horizon - 1
        history = (torch.cat((values, target_values[:, :-1]), dim=1) - loc) / scale
        calendar = self._calendar(batch.time, rows, tokens, offset, context.device)
        features = token_features(
            history, max_lag, 0, tokens, self.config.lags_seq, loc, scale, calendar
        )
        df, mu, sigma = self.module(
            features,
            start=0,
            rope_scaling=self.rope_scaling(horizon),
            total_length=self.context_length + horizon,
        )
        truth = torch.cat((values[:, max_lag + 1 :], target_values), dim=1)
        mask = torch.cat((observed[:, max_lag + 1 :], target_observed.float()), dim=1)
        log_prob = StudentT(df, mu, sigma, validate_args=False).log_prob((truth - loc) / scale)
        nll = -(log_prob - scale.log())  # density in data units
        return pooled(nll, mask, reduction)

    # --- forecasting --------------------------------------------------------------------------

    @torch.no_grad()
    def predict(
        self,
        context: torch.Tensor,
        horizon: int,
        num_samples: int,
        time: TimeAxis | None = None,
        seeds: np.ndarray | None = None,
    ) -> Forecast:
        """Sample ``num_samples`` paths per series autoregressively, all B*S paths at once.

        Draws: without ``seeds``, ``StudentT.sample`` from torch's global generator; with
        ``seeds`` (one per row), row ``i``'s paths draw only from a generator seeded by
        ``seeds[i]``: their standard normals [S, H] first, then at each step one gamma variate
        per path (:func:`~vitalfm.models.randomness.row_student_t`, the same Student-t).

        Both paths compute loc/scale once from the context and keep them over the horizon,
        as teacher-forced training scales horizon tokens by the context's statistics.
        (Upstream's no-cache path rescales the growing past at every step, which a KV cache
        cannot reproduce: cached keys were computed with the old scale.) With the same torch
        seed, the cached and the recomputing path therefore give the same samples up to
        float rounding; they draw in the same order.
        """
        if horizon < 1 or num_samples < 1:
            raise ModelError(
                f"cannot forecast horizon {horizon} with {num_samples} samples",
                "use a horizon and a number of samples of at least 1",
            )
        seeds = check_seeds(seeds, len(context))
        eval_mode(self.module)
        device = next(self.module.parameters()).device
        context = context.float().to(device)
        rows, paths = len(context), len(context) * num_samples
        values, observed, offset = self._past(context)
        loc, scale = self._scale(values, observed)
        scaled_past = (values - loc) / scale
        calendar = self._calendar(time, rows, self.context_length + horizon, offset, device)
        max_lag, tokens = self.config.max_lag, self.context_length
        # every path's scaled series: past, then the drawn values
        history = scaled_past.new_zeros(paths, max_lag + tokens + horizon)
        history[:, : max_lag + tokens] = scaled_past.repeat_interleave(num_samples, dim=0)
        path_loc = loc.repeat_interleave(num_samples, dim=0)
        path_scale = scale.repeat_interleave(num_samples, dim=0)
        path_calendar = (
            calendar.repeat_interleave(num_samples, dim=0) if calendar is not None else None
        )
        call = {
            "rope_scaling": self.rope_scaling(horizon),
            "total_length": tokens + horizon,
        }
        lags = self.config.lags_seq
        generators = None if seeds is None else row_generators(seeds, device)
        normals = None if generators is None else row_normals(generators, (num_samples, horizon))

        def draw(
            step: int, df: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor
        ) -> torch.Tensor:
            """Step ``step``'s value of every path, in scaled units."""
            if generators is None or normals is None:
                return _draw(df, mu, sigma)
            noise = normals[:, :, step].reshape(-1).to(df.dtype)
            return row_student_t(df, mu, sigma, generators, noise)

        def features(start: int, stop: int) -> torch.Tensor:
            return token_features(
                history, max_lag, start, stop, lags, path_loc, path_scale, path_calendar
            )

        if self.settings.use_kv_cache:
            cache = SamplingCache(self.config.n_layer, num_samples, capacity=horizon - 1)
            prefix = token_features(scaled_past, max_lag, 0, tokens, lags, loc, scale, calendar)
            params = self.module(prefix, start=0, cache=cache, **call)
            params = tuple(p[:, -1].repeat_interleave(num_samples) for p in params)
            for step in range(horizon):
                if step > 0:
                    position = tokens + step - 1  # the token of the value drawn last
                    out = self.module(
                        features(position, position + 1), start=position, cache=cache, **call
                    )
                    params = tuple(p[:, -1] for p in out)
                history[:, max_lag + tokens + step] = draw(step, *params)
        else:
            for step in range(horizon):
                out = self.module(features(0, tokens + step), start=0, **call)
                history[:, max_lag + tokens + step] = draw(step, *(p[:, -1] for p in out))
        drawn = history[:, max_lag + tokens :] * path_scale + path_loc
        samples = drawn.reshape(rows, num_samples, horizon).cpu()
        return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)

    def describe(self) -> dict[str, Any]:
        config = self.config
        return {
            **super().describe(),
            "architecture": {
                "n_layer": config.n_layer,
                "n_head": config.n_head,
                "n_embd_per_head": config.n_embd_per_head,
                "d_model": config.d_model,
                "trained_context_length": config.context_length,
                "lags": len(config.lags_seq),
                "max_lag": config.max_lag,
                "feature_size": config.feature_size,
                "scaling": config.scaling,
                "time_feat": config.time_feat,
            },
            "context_length": self.context_length,
            "rope_scaling": self.rope_rule(),
        }


def _draw(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """One draw per path, in scaled units."""
    return StudentT(df, loc, scale, validate_args=False).sample()


def _download(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, CHECKPOINT_FILE))
    except (OSError, ValueError, EntryNotFoundError) as err:
        raise ModelError(
            f"cannot get {CHECKPOINT_FILE} of hub model {repo_id!r}: it is not in the local "
            "Hugging Face cache and the hub cannot be reached or has no such file "
            f"({type(err).__name__})",
            f"check the id (the released model is {DEFAULT_HUB_REPO}); offline, download "
            f"{CHECKPOINT_FILE} elsewhere (`hf download {repo_id} "
            f"{CHECKPOINT_FILE} --local-dir <folder>`) and set `source: {{path: <folder>}}` "
            "(the folder or the .ckpt file)",
        ) from None
