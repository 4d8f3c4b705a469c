"""Load Lag-Llama checkpoints the way upstream Lag-Llama does, in its environment (gluonts 0.14
and its Lightning; see vitalfm.testing_upstream), and print what came back as JSON.

Run by tests/test_lag_llama.py with that environment's python, never imported by the project's
tests (it needs gluonts 0.14, which has ``gluonts.torch.modules.loss``):

    python lag_llama_upstream_load.py CHECKPOINT... > report.json

Per checkpoint: the plain unpickling upstream's loader does (``torch.load(weights_only=False)``),
what the gluonts objects turned into and whether gluonts can use them (a Student-t built by the
head, its negative log-likelihood through the loss), the plain hyper-parameters, a hash of every
tensor, and, when Lightning imports, ``load_from_checkpoint`` of a LightningModule whose
arguments carry upstream's names and which builds a network of the released module tree from
``model_kwargs`` (strict loading checks every key and shape).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import sys
import traceback
from typing import Any

# Lightning < 2.2 calls torch.load without weights_only; torch >= 2.6 then refuses gluonts
# objects. Upstream's users set this (lag-llama.md, section 7.1).
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

import torch
from gluonts.core import serde
from gluonts.core.component import equals
from gluonts.torch.distributions import StudentTOutput
from gluonts.torch.modules.loss import NegativeLogLikelihood

DEFAULT_LOSS = NegativeLogLikelihood()


def qualified(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def plain(value: Any) -> Any:
    """JSON-able values as they are; anything else as its class name."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return f"<{qualified(value)}>"


def tensor_hash(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def loss_report(loss: Any) -> dict[str, Any]:
    return {
        "class": qualified(loss),
        "is_gluonts_class": isinstance(loss, NegativeLogLikelihood),
        "equals_a_new_one": loss == NegativeLogLikelihood(),
        "state": plain(loss.__getstate__()),
        "pickles_again": pickle.loads(pickle.dumps(loss)) == loss,
    }


def head_report(head: Any, loss: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "class": qualified(head),
        "is_gluonts_class": isinstance(head, StudentTOutput),
        "equals_a_new_one": equals(head, StudentTOutput()),
        "init_args": plain(dict(head.__init_args__)),
        "serde_round_trip": equals(serde.decode(serde.encode(head)), head),
        "args_dim": plain(head.args_dim),
    }
    # what upstream's model does with them: project features to (df, loc, scale), build the
    # distribution, score a target with the loss
    torch.manual_seed(0)
    projection = head.get_args_proj(8)
    args = projection(torch.randn(5, 8))
    distribution = head.distribution(args)
    target = torch.randn(5)
    with torch.no_grad():
        by_loss = loss(distribution, target)
        df, loc, scale = args
        by_torch = -torch.distributions.StudentT(df, loc, scale).log_prob(target)
    report["loss_of_a_student_t"] = {
        "finite": bool(torch.isfinite(by_loss).all()),
        "max_difference_to_torch": float((by_loss - by_torch).abs().max()),
    }
    return report


def unpickled(path: str) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hyper = checkpoint["hyper_parameters"]
    kwargs = hyper["model_kwargs"]
    return {
        "top_level_keys": list(checkpoint),
        "hparams_name": checkpoint.get("hparams_name"),
        "loss": loss_report(hyper["loss"]),
        "distr_output": head_report(kwargs["distr_output"], hyper["loss"]),
        "model_kwargs": plain({k: v for k, v in kwargs.items() if k != "distr_output"}),
        "hyper_parameters": plain(
            {k: v for k, v in hyper.items() if k not in ("model_kwargs", "loss")}
        ),
        "state_dict": {
            k: [list(v.shape), tensor_hash(v)] for k, v in checkpoint["state_dict"].items()
        },
    }


# --- Lightning --------------------------------------------------------------------------------


def network_of(model_kwargs: dict[str, Any]) -> torch.nn.Module:
    """A module with the released Lag-Llama tree (lag-llama.md, section 7) for ``model_kwargs``:
    shapes only, no forward; enough for Lightning's strict state_dict loading."""
    nn = torch.nn
    inputs = model_kwargs["input_size"]
    d = model_kwargs["n_head"] * model_kwargs["n_embd_per_head"]
    features = inputs * (len(model_kwargs["lags_seq"]) + 2) + (
        6 if model_kwargs.get("time_feat") else 0
    )
    hidden = math.ceil(int(8 * d / 3) / 256) * 256

    def scale(size: int) -> nn.Module:
        norm = nn.Module()
        norm.scale = nn.Parameter(torch.ones(size))
        return norm

    def block() -> nn.Module:
        b = nn.Module()
        b.rms_1, b.rms_2 = scale(d), scale(d)
        b.attn = nn.Module()
        b.attn.q_proj = nn.Linear(d, d, bias=False)
        b.attn.kv_proj = nn.Linear(d, 2 * d, bias=False)
        b.attn.c_proj = nn.Linear(d, d, bias=False)
        b.mlp = nn.Module()
        b.mlp.c_fc1 = nn.Linear(d, hidden, bias=False)
        b.mlp.c_fc2 = nn.Linear(d, hidden, bias=False)
        b.mlp.c_proj = nn.Linear(hidden, d, bias=False)
        return b

    net = nn.Module()
    net.param_proj = nn.Module()
    net.param_proj.proj = nn.ModuleList(nn.Linear(d, 1) for _ in range(3))
    net.transformer = nn.ModuleDict(
        {
            "wte": nn.Linear(features, d),
            "h": nn.ModuleList(block() for _ in range(model_kwargs["n_layer"])),
            "ln_f": scale(d),
        }
    )
    return net


def lightning_report(path: str) -> dict[str, Any]:
    try:
        import lightning
    except ImportError as err:
        return {"skipped": f"lightning does not import: {err}"}

    class UpstreamShapedModule(lightning.LightningModule):
        """Upstream's Lightning-module argument names (lag-llama.md, section 7)."""

        def __init__(
            self,
            model_kwargs: dict,
            context_length: int,
            prediction_length: int,
            loss: Any = DEFAULT_LOSS,
            lr: float = 1e-3,
            weight_decay: float = 1e-8,
            aug_prob: float = 0.1,
            freq_mask_rate: float = 0.1,
            freq_mixing_rate: float = 0.1,
            jitter_prob: float = 0.0,
            jitter_sigma: float = 0.03,
            scaling_prob: float = 0.0,
            scaling_sigma: float = 0.1,
            rotation_prob: float = 0.0,
            permutation_prob: float = 0.0,
            permutation_max_segments: int = 5,
            permutation_seg_mode: str = "equal",
            magnitude_warp_prob: float = 0.0,
            magnitude_warp_sigma: float = 0.2,
            magnitude_warp_knot: int = 4,
            time_warp_prob: float = 0.0,
            time_warp_sigma: float = 0.2,
            time_warp_knot: int = 4,
            window_slice_prob: float = 0.0,
            window_slice_reduce_ratio: float = 0.9,
            window_warp_prob: float = 0.0,
            window_warp_window_ratio: float = 0.1,
            window_warp_scales: list | None = None,
            data_id_to_name_map: dict | None = None,
            use_cosine_annealing_lr: bool = False,
            cosine_annealing_lr_args: dict | None = None,
            track_loss_per_series: bool = False,
            nonnegative_pred_samples: bool = False,
            use_kv_cache: bool = True,
            use_single_pass_sampling: bool = False,
        ) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = network_of(self.hparams.model_kwargs)
            self.loss = self.hparams.loss

    try:
        module = UpstreamShapedModule.load_from_checkpoint(path, map_location="cpu")
    except Exception:
        return {"error": traceback.format_exc(limit=4)}
    return {
        "version": lightning.__version__,
        "loss": qualified(module.loss),
        "loss_is_gluonts_class": isinstance(module.loss, NegativeLogLikelihood),
        "distr_output": qualified(module.hparams.model_kwargs["distr_output"]),
        "context_length": module.hparams.context_length,
        "prediction_length": module.hparams.prediction_length,
        "state_dict": {
            f"model.{k}": [list(v.shape), tensor_hash(v)]
            for k, v in module.model.state_dict().items()
        },
    }


def report(path: str) -> dict[str, Any]:
    try:
        result = unpickled(path)
    except Exception:
        return {"error": traceback.format_exc(limit=6)}
    result["lightning"] = lightning_report(path)
    return result


if __name__ == "__main__":
    import gluonts

    versions = {"gluonts": gluonts.__version__, "torch": torch.__version__}
    json.dump(
        {"versions": versions, "checkpoints": {p: report(p) for p in sys.argv[1:]}},
        sys.stdout,
        indent=1,
    )
