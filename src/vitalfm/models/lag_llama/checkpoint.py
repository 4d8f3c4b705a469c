"""Reading and writing ``lag-llama.ckpt``, the Lightning checkpoint Lag-Llama is released as.

Layout (as upstream's Lightning module writes it): top-level ``epoch``, ``global_step``,
``pytorch-lightning_version``, ``state_dict`` (every key prefixed ``model.``), ``loops``,
``callbacks``, ``optimizer_states``, ``lr_schedulers``, ``hparams_name`` (``"kwargs"``) and
``hyper_parameters`` = ``{model_kwargs, context_length, prediction_length, loss, lr, ...}``,
where ``model_kwargs["distr_output"]`` is a pickled gluonts ``StudentTOutput`` and ``loss`` a
pickled ``gluonts.torch.modules.loss.NegativeLogLikelihood``.

Reading goes through :mod:`.restricted_pickle` (see there why); only plain values of the
hyper-parameters are kept and the state_dict is checked against the shapes its
``model_kwargs`` imply before anything is built. Writing produces the same layout, so the
released file, stand-ins and fully fine-tuned models all load through :func:`read_checkpoint`,
and the files this project writes also load in upstream Lag-Llama (gluonts 0.14, its
Lightning): the two gluonts objects are written as calls of their classes
(:class:`DefaultInstance`); tests/test_lag_llama.py checks that in a gluonts 0.14 environment
(:mod:`vitalfm.testing_upstream`).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vitalfm.models.base import ModelError
from vitalfm.models.lag_llama import restricted_pickle
from vitalfm.models.lag_llama.network import LagLlamaConfig

CHECKPOINT_FILE = "lag-llama.ckpt"
DEFAULT_HUB_REPO = "time-series-foundation-models/Lag-Llama"
STATE_PREFIX = "model."
TOP_LEVEL_KEYS = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "callbacks",
    "optimizer_states",
    "lr_schedulers",
    "hparams_name",
    "hyper_parameters",
)
STUDENT_T_OUTPUT = "gluonts.torch.distributions.studentT.StudentTOutput"
GONE_LOSS_MODULE = "gluonts.torch.modules.loss"

#: The Lightning module's arguments that upstream saves beside model_kwargs, with its
#: defaults (a checkpoint may lack those added after it was written; they read as these).
LIGHTNING_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "weight_decay": 1e-8,
    "aug_prob": 0.1,
    "freq_mask_rate": 0.1,
    "freq_mixing_rate": 0.1,
    "jitter_prob": 0.0,
    "jitter_sigma": 0.03,
    "scaling_prob": 0.0,
    "scaling_sigma": 0.1,
    "rotation_prob": 0.0,
    "permutation_prob": 0.0,
    "permutation_max_segments": 5,
    "permutation_seg_mode": "equal",
    "magnitude_warp_prob": 0.0,
    "magnitude_warp_sigma": 0.2,
    "magnitude_warp_knot": 4,
    "time_warp_prob": 0.0,
    "time_warp_sigma": 0.2,
    "time_warp_knot": 4,
    "window_slice_prob": 0.0,
    "window_slice_reduce_ratio": 0.9,
    "window_warp_prob": 0.0,
    "window_warp_window_ratio": 0.1,
    "window_warp_scales": [0.5, 2.0],
    "data_id_to_name_map": {},
    "use_cosine_annealing_lr": False,
    "cosine_annealing_lr_args": {},
    "track_loss_per_series": False,
    "nonnegative_pred_samples": False,
    "use_kv_cache": True,
}

_FIX_SOURCE = (
    "use the released lag-llama.ckpt (Hugging Face Hub "
    f"{DEFAULT_HUB_REPO}) or one this project wrote, and point `source: {{path: ...}}` at it"
)


@dataclass
class CheckpointContents:
    """What the project keeps of a checkpoint: plain values and the network weights."""

    config: LagLlamaConfig
    state_dict: dict[str, torch.Tensor]  # keys without the ``model.`` prefix
    hyper_parameters: dict[str, Any]  # plain values, without model_kwargs and loss


# --- shapes ------------------------------------------------------------------------------------


def expected_shapes(config: LagLlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every state_dict key of the network (without ``model.``) and its shape."""
    d, hidden = config.d_model, config.mlp_hidden
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(3):  # df, loc, scale
        shapes[f"param_proj.proj.{i}.weight"] = (1, d)
        shapes[f"param_proj.proj.{i}.bias"] = (1,)
    shapes["transformer.wte.weight"] = (d, config.feature_size)
    shapes["transformer.wte.bias"] = (d,)
    for i in range(config.n_layer):
        block = f"transformer.h.{i}"
        shapes[f"{block}.rms_1.scale"] = (d,)
        shapes[f"{block}.attn.q_proj.weight"] = (d, d)
        shapes[f"{block}.attn.kv_proj.weight"] = (2 * d, d)
        shapes[f"{block}.attn.c_proj.weight"] = (d, d)
        shapes[f"{block}.rms_2.scale"] = (d,)
        shapes[f"{block}.mlp.c_fc1.weight"] = (hidden, d)
        shapes[f"{block}.mlp.c_fc2.weight"] = (hidden, d)
        shapes[f"{block}.mlp.c_proj.weight"] = (d, hidden)
    shapes["transformer.ln_f.scale"] = (d,)
    return shapes


def check_state_dict(state: Mapping[str, Any], config: LagLlamaConfig, where: str) -> None:
    """ModelError naming the missing, unexpected and mis-shaped tensors, if any."""
    expected = expected_shapes(config)
    problems = []
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) ({', '.join(missing[:4])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s) ({', '.join(unexpected[:4])})")
    wrong = [
        f"{k} is {tuple(state[k].shape)}, expected {shape}"
        for k, shape in expected.items()
        if k in state and (not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != shape)
    ]
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) of the wrong shape ({'; '.join(wrong[:3])})")
    if problems:
        raise ModelError(
            f"the weights in {where} do not match its Lag-Llama hyper-parameters "
            f"(n_layer {config.n_layer}, n_head {config.n_head}, n_embd_per_head "
            f"{config.n_embd_per_head}, {len(config.lags_seq)} lags, time_feat "
            f"{config.time_feat}): {'; '.join(problems)}",
            _FIX_SOURCE,
        )


# --- finding the file ---------------------------------------------------------------------------


def find_checkpoint_file(location: str | Path) -> Path:
    """The ``.ckpt`` file at ``location``: the file itself, or a folder's checkpoint."""
    path = Path(location)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelError(
            f"Lag-Llama checkpoint {path} does not exist",
            "point `source: {path: ...}` at a folder holding lag-llama.ckpt or at the file",
        )
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    candidates = sorted(p for p in path.glob("*.ckpt") if p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ModelError(
            f"folder {path} holds several checkpoints ({', '.join(p.name for p in candidates)})",
            "point `source: {path: ...}` at one .ckpt file",
        )
    looks_like = ""
    if (path / "config.json").is_file():
        looks_like = (
            " (it holds config.json: a Hugging Face checkpoint such as Chronos or MOIRAI, "
            "not Lag-Llama)"
        )
    raise ModelError(
        f"folder {path} holds no {CHECKPOINT_FILE}{looks_like}",
        f"download it (`hf download {DEFAULT_HUB_REPO} {CHECKPOINT_FILE} "
        "--local-dir <folder>`) and set `source: {path: <folder>}`, or use the family that "
        "matches this folder",
    )


# --- reading -----------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` with everything but None/bool/int/float/str/list/dict dropped (None if not)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [v for v in (_plain(x) for x in value) if v is not _DROP]
    if isinstance(value, dict):
        kept = {k: _plain(v) for k, v in value.items() if isinstance(k, str)}
        return {k: v for k, v in kept.items() if v is not _DROP}
    return _DROP


_DROP = object()


def read_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> CheckpointContents:
    """Load ``path`` with the restricted unpickler; validate; keep plain values and weights."""
    try:
        raw = torch.load(
            path,
            map_location=map_location,
            weights_only=False,  # gluonts reduces; restricted_pickle decides what may load
            pickle_module=restricted_pickle,
        )
    except restricted_pickle.UntrustedGlobal as err:
        raise ModelError(
            f"{path} is not a trusted Lag-Llama checkpoint: it pickles {err.qualified_name}",
            "load only the released lag-llama.ckpt or checkpoints this project wrote; "
            "a checkpoint that pickles other code may run it when loaded elsewhere",
        ) from None
    except (
        OSError,
        EOFError,
        RuntimeError,
        ValueError,
        TypeError,
        AttributeError,
        KeyError,
        IndexError,
        zipfile.BadZipFile,
        restricted_pickle.UnpicklingError,
    ) as err:
        raise ModelError(
            f"cannot read {path} as a PyTorch checkpoint ({type(err).__name__}: {err})",
            "check that the file is a complete, uncorrupted lag-llama.ckpt; " + _FIX_SOURCE,
        ) from None
    where = str(path)
    if not isinstance(raw, dict):
        raise ModelError(
            f"{where} is not a Lag-Llama checkpoint: it holds a {type(raw).__name__}, not the "
            "Lightning checkpoint dict",
            _FIX_SOURCE,
        )
    hyper = raw.get("hyper_parameters")
    kwargs = hyper.get("model_kwargs") if isinstance(hyper, dict) else None
    state = raw.get("state_dict")
    if not isinstance(kwargs, dict) or not isinstance(state, Mapping):
        lacking = [
            name
            for name, value in (("hyper_parameters.model_kwargs", kwargs), ("state_dict", state))
            if not isinstance(value, Mapping)
        ]
        raise ModelError(
            f"{where} is not a Lag-Llama checkpoint: it has no {' or '.join(lacking)} "
            f"(top-level keys: {', '.join(map(str, list(raw)[:8])) or 'none'})",
            _FIX_SOURCE,
        )
    head = kwargs.get("distr_output")
    if head is not None:
        head_name = getattr(type(head), "gluonts_name", type(head).__qualname__)
        if head_name != STUDENT_T_OUTPUT:
            raise ModelError(
                f"{where} has a {head_name} output head; only the Student-t head of the "
                "released Lag-Llama is implemented",
                "use a Lag-Llama checkpoint trained with StudentTOutput (as released)",
            )
    config = LagLlamaConfig.from_model_kwargs(kwargs)
    keys = [k for k in state if isinstance(k, str)]
    if not keys or not all(k.startswith(STATE_PREFIX) for k in keys):
        odd = next((k for k in keys if not k.startswith(STATE_PREFIX)), None)
        raise ModelError(
            f"{where} is not a Lag-Llama checkpoint: its state_dict keys do not all start "
            f"with {STATE_PREFIX!r} (e.g. {odd!r})",
            _FIX_SOURCE,
        )
    weights = {k[len(STATE_PREFIX) :]: v for k, v in state.items()}
    check_state_dict(weights, config, where)
    plain = {
        k: v
        for k, v in ((k, _plain(v)) for k, v in hyper.items() if k not in ("model_kwargs", "loss"))
        if v is not _DROP
    }
    return CheckpointContents(config, weights, plain)


# --- writing ----------------------------------------------------------------------------------


class _NegativeLogLikelihood:
    """Named as gluonts < 0.15's ``gluonts.torch.modules.loss.NegativeLogLikelihood`` so that
    pickle can write that class path while gluonts >= 0.15 (which lacks it) is installed."""


_NegativeLogLikelihood.__module__ = GONE_LOSS_MODULE
_NegativeLogLikelihood.__name__ = "NegativeLogLikelihood"
_NegativeLogLikelihood.__qualname__ = "NegativeLogLikelihood"


@contextmanager
def loss_class() -> Iterator[type]:
    """The class to pickle as ``hyper_parameters["loss"]``, importable while pickling.

    pickle writes a class as a GLOBAL (module + name) and checks that importing that name
    gives the same object back. gluonts >= 0.15 has no ``gluonts.torch.modules.loss``, so
    while the checkpoint is written a stand-in module holding :class:`_NegativeLogLikelihood`
    sits at that name in ``sys.modules``; it is removed afterwards. With an older gluonts that
    still has the module, its own class is used.
    """
    try:
        real = importlib.import_module(GONE_LOSS_MODULE)
    except ImportError:
        real = None
    if real is not None and sys.modules.get(GONE_LOSS_MODULE) is real:
        yield real.NegativeLogLikelihood
        return
    stand_in = types.ModuleType(GONE_LOSS_MODULE)
    stand_in.NegativeLogLikelihood = _NegativeLogLikelihood  # type: ignore[attr-defined]
    previous = sys.modules.get(GONE_LOSS_MODULE)
    sys.modules[GONE_LOSS_MODULE] = stand_in
    try:
        yield _NegativeLogLikelihood
    finally:
        if previous is None:
            sys.modules.pop(GONE_LOSS_MODULE, None)
        else:
            sys.modules[GONE_LOSS_MODULE] = previous


class DefaultInstance:
    """Pickles as a call ``cls()``: the gluonts class rebuilds itself with its defaults.

    Upstream Lag-Llama unpickles ``loss`` and ``distr_output`` with gluonts 0.14's own classes,
    each of which expects its own state layout: ``NegativeLogLikelihood`` is a pydantic (v1
    API) model whose ``__setstate__`` wants ``{"__dict__": ..., "__fields_set__": ...}``,
    ``StudentTOutput`` a ``validated`` class wanting ``{"__init_args__": ...}``, and the layouts
    differ between gluonts and pydantic versions (gluonts >= 0.15 adds ``beta`` to every
    output). A call of the class with no arguments carries no state, so every gluonts that has
    the class path builds a real, consistent object (``beta`` 0, upstream's default for both);
    :mod:`.restricted_pickle` reads the call as an inert placeholder.
    """

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (self.cls, ())


def _student_t_output() -> type:
    """gluonts' ``StudentTOutput``, refused if the installed gluonts moved it elsewhere."""
    from gluonts.torch.distributions import StudentTOutput

    where = f"{StudentTOutput.__module__}.{StudentTOutput.__qualname__}"
    if where != STUDENT_T_OUTPUT:
        raise ModelError(
            f"the installed gluonts defines StudentTOutput as {where}, not {STUDENT_T_OUTPUT}; "
            "a checkpoint pickling it there would not load in upstream Lag-Llama",
            "install the gluonts version of envs/requirements.lock",
        )
    return StudentTOutput


def _lightning_version() -> str:
    from importlib import metadata

    for name in ("lightning", "pytorch-lightning"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def write_checkpoint(
    path: Path,
    config: LagLlamaConfig,
    state_dict: Mapping[str, torch.Tensor],
    hyper_parameters: Mapping[str, Any],
    global_step: int = 0,
) -> None:
    """Write ``path`` in the released layout (atomically: a temporary name, then rename).

    ``hyper_parameters`` are the plain Lightning-module arguments (``context_length``,
    ``prediction_length``, ``lr``, ...); missing ones get upstream's defaults.
    """
    check_state_dict(state_dict, config, "the model to save")
    student_t = _student_t_output()
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {k: v for k, v in hyper_parameters.items() if k not in ("model_kwargs", "loss")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    with loss_class() as nll:
        hparams: dict[str, Any] = {
            "model_kwargs": {
                **config.model_kwargs(),
                "distr_output": DefaultInstance(student_t),
            },
            "context_length": extra.pop("context_length", config.context_length),
            "prediction_length": extra.pop("prediction_length", 1),
            "loss": DefaultInstance(nll),
            **{k: extra.pop(k, v) for k, v in LIGHTNING_DEFAULTS.items()},
            **extra,
        }
        checkpoint = {
            "epoch": 0,
            "global_step": int(global_step),
            "pytorch-lightning_version": _lightning_version(),
            "state_dict": OrderedDict(
                (STATE_PREFIX + k, v.detach().cpu().contiguous()) for k, v in state_dict.items()
            ),
            "loops": {},
            "callbacks": {},
            "optimizer_states": [],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": hparams,
        }
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
