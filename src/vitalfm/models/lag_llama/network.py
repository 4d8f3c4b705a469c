"""The Lag-Llama network in plain torch, written here from the architecture description.

Why our own module rather than the upstream package: upstream pins gluonts<=0.14 (numpy<2),
its checkpoint does not load on torch>=2.6, and it keeps the KV cache inside the attention
layers. The module tree below gives exactly the released ``state_dict`` (73 tensors, keys
without the Lightning ``model.`` prefix), so the released weights load with ``strict=True``:

- ``param_proj.proj.{0,1,2}``: the Student-t head (df, loc, scale);
- ``transformer.wte``: Linear(feature size -> d_model) with bias;
- ``transformer.h.{i}``: pre-norm blocks (``rms_1``, ``attn``, ``rms_2``, ``mlp``);
- ``transformer.ln_f``: the final RMSNorm.

RoPE has no weights; its ``inv_freq`` is a non-persistent buffer, and cos/sin are computed
per call from the positions (a few hundred positions at most here, so no table is kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitalfm.models.base import ModelError

MLP_MULTIPLE = 256
ROPE_BASE = 10000.0
RMS_EPS = 1e-5
ROPE_KINDS = ("none", "linear", "dynamic", "nope")
SCALINGS = ("robust", "mean", "std", "none")


def mlp_hidden_size(d_model: int) -> int:
    """SwiGLU width: two thirds of 4 * d_model, rounded up to a multiple of 256."""
    hidden = int(2 * 4 * d_model / 3)
    return -(-hidden // MLP_MULTIPLE) * MLP_MULTIPLE


def _bad_kwargs(problem: str) -> ModelError:
    return ModelError(
        f"the checkpoint's model_kwargs are not a Lag-Llama configuration: {problem}",
        "use a lag-llama.ckpt written by the upstream code or by this project",
    )


@dataclass(frozen=True)
class RopeScaling:
    """How RoPE positions are stretched: ``none``, ``linear``, ``dynamic`` (NTK) or ``nope``."""

    kind: str = "none"
    factor: float = 1.0

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | None) -> RopeScaling:
        """From upstream's ``{"type": ..., "factor": ...}`` form (None means no scaling)."""
        if entry is None:
            return cls()
        kind = entry.get("type")
        if kind not in ("linear", "dynamic", "nope"):
            raise ValueError(f"type must be linear, dynamic or nope, got {kind!r}")
        factor = entry.get("factor", 1.0 if kind == "nope" else None)
        if isinstance(factor, bool) or not isinstance(factor, int | float):
            raise ValueError(f"factor must be a number >= 1, got {factor!r}")
        if not (math.isfinite(factor) and factor >= 1.0):
            raise ValueError(f"factor must be a number >= 1, got {factor!r}")
        return cls(kind, float(factor))

    def to_dict(self) -> dict[str, Any] | None:
        return None if self.kind == "none" else {"type": self.kind, "factor": self.factor}


@dataclass(frozen=True)
class LagLlamaConfig:
    """The plain hyper-parameters of a Lag-Llama model (the checkpoint's ``model_kwargs``)."""

    context_length: int
    lags_seq: tuple[int, ...]
    n_layer: int
    n_head: int
    n_embd_per_head: int
    max_context_length: int = 2048
    scaling: str = "mean"
    time_feat: bool = False
    dropout: float = 0.0
    input_size: int = 1
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    num_parallel_samples: int = 100

    @property
    def d_model(self) -> int:
        return self.n_head * self.n_embd_per_head

    @property
    def max_lag(self) -> int:
        return max(self.lags_seq)

    @property
    def feature_size(self) -> int:
        """lags + [log1p|loc|, log scale] (+ 6 calendar features)."""
        return self.input_size * (len(self.lags_seq) + 2) + (6 if self.time_feat else 0)

    @property
    def mlp_hidden(self) -> int:
        return mlp_hidden_size(self.d_model)

    @classmethod
    def from_model_kwargs(cls, kwargs: Mapping[str, Any]) -> LagLlamaConfig:
        """Validate ``model_kwargs``; keys added upstream after the release get defaults.

        Defaults are those of upstream's model signature (``max_context_length`` 2048,
        ``scaling`` mean, ``time_feat`` false, ``dropout`` 0, ``rope_scaling`` none).
        """
        if not isinstance(kwargs, Mapping):
            raise _bad_kwargs(f"expected a mapping, got {type(kwargs).__name__}")
        missing = [
            k
            for k in ("context_length", "lags_seq", "n_layer", "n_head", "n_embd_per_head")
            if k not in kwargs
        ]
        if missing:
            raise _bad_kwargs(f"missing {', '.join(missing)}")

        def positive_int(key: str, default: int | None = None) -> int:
            value = kwargs.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _bad_kwargs(f"{key} = {value!r} is not a positive integer")
            return value

        lags = kwargs["lags_seq"]
        if (
            not isinstance(lags, list | tuple)
            or not lags
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in lags)
        ):
            raise _bad_kwargs("lags_seq is not a non-empty list of non-negative integers")
        scaling = kwargs.get("scaling", "mean")
        if scaling is None:
            scaling = "none"
        if scaling not in SCALINGS:
            # upstream falls back to no scaling for any other name
            scaling = "none"
        input_size = positive_int("input_size", 1)
        if input_size != 1:
            raise ModelError(
                f"the checkpoint is a multivariate Lag-Llama (input_size {input_size})",
                "use a univariate checkpoint (input_size 1), as released",
            )
        dropout = kwargs.get("dropout", 0.0)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise _bad_kwargs(f"dropout = {dropout!r} is not a number")
        try:
            rope = RopeScaling.from_dict(kwargs.get("rope_scaling"))
        except (ValueError, AttributeError) as err:
            raise _bad_kwargs(f"rope_scaling = {kwargs.get('rope_scaling')!r}: {err}") from None
        return cls(
            context_length=positive_int("context_length"),
            lags_seq=tuple(int(x) for x in lags),
            n_layer=positive_int("n_layer"),
            n_head=positive_int("n_head"),
            n_embd_per_head=positive_int("n_embd_per_head"),
            max_context_length=positive_int("max_context_length", 2048),
            scaling=scaling,
            time_feat=bool(kwargs.get("time_feat", False)),
            dropout=float(dropout),
            input_size=input_size,
            rope_scaling=rope,
            num_parallel_samples=positive_int("num_parallel_samples", 100),
        )

    def model_kwargs(self) -> dict[str, Any]:
        """The plain ``model_kwargs`` in upstream's key order (``distr_output`` added on save)."""
        return {
            "input_size": self.input_size,
            "context_length": self.context_length,
            "max_context_length": self.max_context_length,
            "lags_seq": list(self.lags_seq),
            "n_layer": self.n_layer,
            "n_embd_per_head": self.n_embd_per_head,
            "n_head": self.n_head,
            "scaling": self.scaling,
            "num_parallel_samples": self.num_parallel_samples,
            "rope_scaling": self.rope_scaling.to_dict(),
            "time_feat": self.time_feat,
            "dropout": self.dropout,
        }


# --- layers ------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """scale * x / sqrt(mean(x^2) + eps); the mean of squares in fp32, no bias, no centring."""

    def __init__(self, size: int, eps: float = RMS_EPS) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean_square = x.float().pow(2).mean(dim=-1, keepdim=True)
        return (self.scale * (x * torch.rsqrt(mean_square + self.eps))).type_as(x)


class RotaryEmbedding(nn.Module):
    """Rotate-half RoPE (LLaMA/HF convention) with linear, dynamic-NTK or no scaling."""

    def __init__(self, head_dim: int, max_positions: int, base: float = ROPE_BASE) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.max_positions = max_positions
        self.base = base
        self.register_buffer("inv_freq", self._inv_freq(base), persistent=False)

    def _inv_freq(self, base: float, device: torch.device | None = None) -> torch.Tensor:
        exponents = torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
        return 1.0 / (base ** (exponents / self.head_dim))

    def forward(
        self, positions: torch.Tensor, scaling: RopeScaling, total_length: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """cos, sin [T, head_dim] for integer ``positions`` [T]; None for ``nope``.

        ``dynamic`` rescales the base once the sequence (``total_length`` tokens, fixed for a
        whole call so that cached and recomputed decoding agree) exceeds ``max_positions``.
        """
        if scaling.kind == "nope":
            return None
        inv_freq = self.inv_freq
        t = positions.to(torch.float32)
        if scaling.kind == "linear":
            t = t / scaling.factor
        elif scaling.kind == "dynamic" and total_length > self.max_positions:
            factor = scaling.factor
            stretch = factor * total_length / self.max_positions - (factor - 1)
            base = self.base * stretch ** (self.head_dim / (self.head_dim - 2))
            inv_freq = self._inv_freq(base, inv_freq.device)
        freqs = torch.outer(t, inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """x [..., T, head_dim] rotated by position (no-op for ``nope``)."""
    if rope is None:
        return x
    cos, sin = rope
    return x * cos.to(x.dtype) + rotate_half(x) * sin.to(x.dtype)


@dataclass
class LayerCache:
    """One attention layer's keys and values while sampling paths.

    The context (``prefix``) is encoded once per series, [B, H, C, D]; the tokens drawn
    afterwards differ per path, so they go into ``suffix`` buffers [B*S, H, capacity, D].
    Attention over the prefix broadcasts over the S paths instead of copying it S times.
    """

    prefix_k: torch.Tensor | None = None
    prefix_v: torch.Tensor | None = None
    suffix_k: torch.Tensor | None = None
    suffix_v: torch.Tensor | None = None
    filled: int = 0


class SamplingCache:
    """KV cache of a whole network for one sampling call: prefill B rows, decode B*S rows."""

    def __init__(self, n_layer: int, num_samples: int, capacity: int) -> None:
        self.layers = [LayerCache() for _ in range(n_layer)]
        self.num_samples = num_samples
        self.capacity = capacity


class CausalSelfAttention(nn.Module):
    def __init__(self, config: LagLlamaConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.n_head = config.n_head
        self.head_dim = config.n_embd_per_head
        self.dropout = config.dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)  # K columns, then V
        self.c_proj = nn.Linear(d_model, d_model, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        return x.view(n, t, self.n_head, self.head_dim).transpose(1, 2)  # [N, H, T, D]

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: LayerCache | None = None,
        num_samples: int = 1,
        capacity: int = 0,
    ) -> torch.Tensor:
        n, t, d_model = x.shape
        q = apply_rope(self._heads(self.q_proj(x)), rope)
        k, v = self.kv_proj(x).split(d_model, dim=-1)
        k, v = apply_rope(self._heads(k), rope), self._heads(v)
        if cache is not None and cache.prefix_k is not None:
            y = self._decode(q, k, v, cache, num_samples, capacity)
        else:
            if cache is not None:  # prefill: the context, once per series
                cache.prefix_k, cache.prefix_v = k, v
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(n, t, d_model))

    def _decode(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        cache: LayerCache,
        num_samples: int,
        capacity: int,
    ) -> torch.Tensor:
        """One new token per path: attend to the shared prefix and the path's own suffix."""
        assert cache.prefix_k is not None and cache.prefix_v is not None
        rows, heads, _, dim = q.shape
        series = cache.prefix_k.shape[0]
        if rows != series * num_samples or q.shape[2] != 1:
            raise ValueError("decoding takes one token for each of B * num_samples paths")
        if cache.suffix_k is None:
            cache.suffix_k = k.new_empty(rows, heads, capacity, dim)
            cache.suffix_v = v.new_empty(rows, heads, capacity, dim)
        assert cache.suffix_v is not None
        if cache.filled >= cache.suffix_k.shape[2]:
            raise ValueError("the sampling cache is full")
        cache.suffix_k[:, :, cache.filled] = k[:, :, 0]
        cache.suffix_v[:, :, cache.filled] = v[:, :, 0]
        cache.filled += 1
        new = cache.filled
        suffix_k = cache.suffix_k[:, :, :new]
        suffix_v = cache.suffix_v[:, :, :new]
        scale = 1.0 / math.sqrt(dim)
        # [B, H, S, D]: the S paths of a series share its prefix keys
        q_by_series = q.reshape(series, num_samples, heads, dim).transpose(1, 2)
        prefix_scores = q_by_series @ cache.prefix_k.transpose(-1, -2) * scale  # [B, H, S, C]
        suffix_scores = (q @ suffix_k.transpose(-1, -2) * scale).reshape(
            series, num_samples, heads, new
        )
        scores = torch.cat((prefix_scores, suffix_scores.transpose(1, 2)), dim=-1)
        weights = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        prefix_w, suffix_w = weights.split([prefix_scores.shape[-1], new], dim=-1)
        out = (prefix_w @ cache.prefix_v).transpose(1, 2).reshape(rows, heads, 1, dim)
        suffix_w = suffix_w.transpose(1, 2).reshape(rows, heads, 1, new)
        return out + suffix_w @ suffix_v  # [B*S, H, 1, D]


class MLP(nn.Module):
    """SwiGLU: c_proj(silu(c_fc1(x)) * c_fc2(x)), no biases."""

    def __init__(self, config: LagLlamaConfig) -> None:
        super().__init__()
        self.c_fc1 = nn.Linear(config.d_model, config.mlp_hidden, bias=False)
        self.c_fc2 = nn.Linear(config.d_model, config.mlp_hidden, bias=False)
        self.c_proj = nn.Linear(config.mlp_hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.silu(self.c_fc1(x)) * self.c_fc2(x))


class Block(nn.Module):
    def __init__(self, config: LagLlamaConfig) -> None:
        super().__init__()
        self.rms_1 = RMSNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.rms_2 = RMSNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None,
        cache: LayerCache | None,
        num_samples: int,
        capacity: int,
    ) -> torch.Tensor:
        x = x + self.attn(self.rms_1(x), rope, cache, num_samples, capacity)
        return x + self.mlp(self.rms_2(x))


class StudentTHead(nn.Module):
    """gluonts ``StudentTOutput``'s projection and domain map, ``proj.0/1/2`` = df, loc, scale.

    Ours rather than gluonts' ``PtArgProj`` so that the head is built from plain code (the
    checkpoint's pickled output object is never used) and returns fp32 under autocast.
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList([nn.Linear(d_model, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raw_df, loc, raw_scale = (layer(x).squeeze(-1).float() for layer in self.proj)
        df = 2.0 + F.softplus(raw_df)
        scale = F.softplus(raw_scale).clamp_min(torch.finfo(torch.float32).eps)
        return df, loc, scale


class LagLlamaNetwork(nn.Module):
    """Features [N, T, feature_size] -> Student-t parameters (df, loc, scale), each [N, T].

    The output at token t parameterises the (scaled) value at t + 1. ``start`` is the
    position of the first token (RoPE); ``total_length`` the call's full token count (only
    dynamic RoPE uses it). With a :class:`SamplingCache`, the first call encodes the context
    of B series and later calls take one token for each of B * S paths.
    """

    def __init__(self, config: LagLlamaConfig) -> None:
        super().__init__()
        self.config = config
        self.param_proj = StudentTHead(config.d_model)
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Linear(config.feature_size, config.d_model),
                "h": nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                "ln_f": RMSNorm(config.d_model),
            }
        )
        self.rotary = RotaryEmbedding(config.n_embd_per_head, config.max_context_length)

    def forward(
        self,
        features: torch.Tensor,
        start: int = 0,
        rope_scaling: RopeScaling | None = None,
        total_length: int | None = None,
        cache: SamplingCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = features.shape[1]
        positions = torch.arange(start, start + tokens, device=features.device)
        rope = self.rotary(
            positions,
            rope_scaling or RopeScaling(),
            total_length if total_length is not None else start + tokens,
        )
        x = self.transformer["wte"](features)
        for i, block in enumerate(self.transformer["h"]):
            layer_cache = cache.layers[i] if cache is not None else None
            x = block(
                x,
                rope,
                layer_cache,
                cache.num_samples if cache is not None else 1,
                cache.capacity if cache is not None else 0,
            )
        return self.param_proj(self.transformer["ln_f"](x))
