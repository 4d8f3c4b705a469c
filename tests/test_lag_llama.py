"""The Lag-Llama family: the released module tree and checkpoint format, the restricted
loader, features against independent computations, cached vs recomputed sampling, options,
and every adaptation method end to end through the engine's run functions."""

from __future__ import annotations

import copyreg
import hashlib
import json
import os
import pickletools
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gluonts.core.component import validated

import vitalfm.models.lag_llama as lag_llama_module
from vitalfm.engine.train import Trainer, TrainingConfig
from vitalfm.engine.training_data import WindowTrainingData
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import adapt, load_adapted, merge_for_inference, save_adapted
from vitalfm.models.base import ModelError, ModelSource, SeriesBatch, TimeAxis
from vitalfm.models.lag_llama import (
    LagLlamaForecaster,
    released_model_kwargs,
    restricted_pickle,
    standin_model_kwargs,
)
from vitalfm.models.lag_llama.checkpoint import (
    CHECKPOINT_FILE,
    GONE_LOSS_MODULE,
    LIGHTNING_DEFAULTS,
    STUDENT_T_OUTPUT,
    TOP_LEVEL_KEYS,
)
from vitalfm.models.lag_llama.features import (
    CALENDAR_FEATURES,
    calendar_features,
    lag_features,
    robust_scale,
)
from vitalfm.models.lag_llama.network import (
    LagLlamaConfig,
    LagLlamaNetwork,
    RopeScaling,
    RotaryEmbedding,
    apply_rope,
)
from vitalfm.models.registry import forecaster_class
from vitalfm.testing import (
    every_setting,
    run_every_setting,
    tiny_study_config,
    toy_window_files,
    toy_windows,
)

CPU = torch.device("cpu")
VITALS = ("heart_rate", "mbp")
# §3 of the reference: the 84 lag indices of the released model
SPEC_LAGS = [
    0, 7, 8, *range(10, 15), *range(19, 25), *range(26, 31), *range(34, 37), *range(46, 49),
    *range(50, 53), 55, *range(57, 62), *range(70, 73), 83, *range(94, 97), *range(102, 105),
    *range(117, 122), *range(142, 145), *range(154, 157), *range(166, 169), *range(177, 182),
    *range(334, 337), *range(362, 365), *range(502, 505), *range(670, 673), *range(718, 721),
    *range(726, 729), *range(1090, 1093),
]  # fmt: skip
TINY = {"n_layer": 1, "n_head": 2, "n_embd_per_head": 4}
TINY_KWARGS = {**released_model_kwargs(), **TINY}


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def axis(rows: int, start_s: int = 1_600_000_000, step_s: int = 900) -> TimeAxis:
    return TimeAxis(start_s + np.arange(rows, dtype=np.int64) * 3_700, step_s)


def forecaster(kwargs: dict[str, Any], seed: int = 0, standin: bool = False) -> LagLlamaForecaster:
    torch.manual_seed(seed)
    network = LagLlamaNetwork(LagLlamaConfig.from_model_kwargs(kwargs)).eval()
    source = ModelSource(standin="lag-llama") if standin else ModelSource(path="memory")
    return LagLlamaForecaster(network, source, {"prediction_length": 12})


def tiny(seed: int = 0) -> LagLlamaForecaster:
    """The released features on a 1-layer, d_model 8 network (test speed)."""
    return forecaster(TINY_KWARGS, seed)


def load(path: Path) -> LagLlamaForecaster:
    return LagLlamaForecaster.load(ModelSource(path=str(path)), CPU)


def contexts(rows: int = 4, points: int = 40, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    values = 80 + rng.normal(0, 5, (rows, points)).cumsum(axis=1) / 3
    values[rng.random(values.shape) < 0.1] = np.nan
    return torch.from_numpy(values.astype(np.float32))


def pickled_globals(checkpoint: Path) -> set[str]:
    with zipfile.ZipFile(checkpoint) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
        data = archive.read(name)
    return {
        str(arg).replace(" ", ".").replace("__builtin__", "builtins")
        for op, arg, _ in pickletools.genops(data)
        if op.name == "GLOBAL"
    }


# --- the released architecture ---------------------------------------------------------------


def test_family_is_found_by_name() -> None:
    assert forecaster_class("lag_llama") is LagLlamaForecaster
    assert LagLlamaForecaster.standin_names() == ("lag-llama",)


def test_released_hyper_parameters_give_the_released_module_tree() -> None:
    assert released_model_kwargs()["lags_seq"] == SPEC_LAGS and len(SPEC_LAGS) == 84
    network = LagLlamaNetwork(LagLlamaConfig.from_model_kwargs(released_model_kwargs()))
    assert network.config.feature_size == 92 and network.config.mlp_hidden == 512
    expected = {
        **{f"param_proj.proj.{i}.weight": (1, 144) for i in range(3)},
        **{f"param_proj.proj.{i}.bias": (1,) for i in range(3)},
        "transformer.wte.weight": (144, 92),
        "transformer.wte.bias": (144,),
        "transformer.ln_f.scale": (144,),
    }
    for i in range(8):
        expected.update(
            {
                f"transformer.h.{i}.rms_1.scale": (144,),
                f"transformer.h.{i}.rms_2.scale": (144,),
                f"transformer.h.{i}.attn.q_proj.weight": (144, 144),
                f"transformer.h.{i}.attn.kv_proj.weight": (288, 144),
                f"transformer.h.{i}.attn.c_proj.weight": (144, 144),
                f"transformer.h.{i}.mlp.c_fc1.weight": (512, 144),
                f"transformer.h.{i}.mlp.c_fc2.weight": (512, 144),
                f"transformer.h.{i}.mlp.c_proj.weight": (144, 512),
            }
        )
    state = network.state_dict()
    assert len(state) == 73
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(v.numel() for v in state.values()) == 2_449_299
    assert sum(p.numel() for p in network.parameters()) == 2_449_299
    assert isinstance(network.param_proj.proj, torch.nn.ModuleList)
    assert isinstance(network.transformer, torch.nn.ModuleDict)
    assert list(network.transformer) == ["wte", "h", "ln_f"]
    assert any(name.endswith("inv_freq") for name, _ in network.named_buffers())
    standin = LagLlamaNetwork(LagLlamaConfig.from_model_kwargs(standin_model_kwargs()))
    assert standin.config.feature_size == 92 and standin.config.scaling == "robust"


class _ReleasedLoss:
    """Pickles as gluonts 0.14's ``NegativeLogLikelihood`` (a pydantic v1 model) does in the
    released file: the class, NEWOBJ, then pydantic's state."""

    def __reduce_ex__(self, protocol: Any) -> tuple:
        state = {"__dict__": {"beta": 0.0}, "__fields_set__": set()}
        return (copyreg.__newobj__, (type(self),), {**state, "__private_attribute_values__": {}})


class _OldWriterLoss:
    """Pickles as this project's writer wrote the loss before it wrote class calls: a gluonts
    ``validated`` object (``functools.partial(object.__new__, cls, beta=0.0)`` and its
    ``__init_args__``), which upstream's gluonts 0.14 cannot unpickle."""

    @validated()
    def __init__(self, beta: float = 0.0) -> None:
        self.beta = beta


for _loss in (_ReleasedLoss, _OldWriterLoss):
    _loss.__module__, _loss.__name__ = GONE_LOSS_MODULE, "NegativeLogLikelihood"
    _loss.__qualname__ = "NegativeLogLikelihood"


@contextmanager
def gone_loss_module(cls: type) -> Iterator[type]:
    """``cls`` importable as gluonts < 0.15's NegativeLogLikelihood while a file is written."""
    module = types.ModuleType(GONE_LOSS_MODULE)
    module.NegativeLogLikelihood = cls  # type: ignore[attr-defined]
    assert GONE_LOSS_MODULE not in sys.modules
    sys.modules[GONE_LOSS_MODULE] = module
    try:
        yield cls
    finally:
        del sys.modules[GONE_LOSS_MODULE]


def fake_released_checkpoint(
    path: Path,
    kwargs: dict[str, Any],
    seed: int = 0,
    weights: dict[str, torch.Tensor] | None = None,
    prefix: str = "model.",
    loss: type = _ReleasedLoss,
) -> dict[str, torch.Tensor]:
    """A checkpoint in the released file's layout: Lightning's top-level keys, the Lightning
    module's hyper-parameters with gluonts objects, optimizer and callback state. The weights
    are a random network of ``kwargs``' shape unless ``weights`` are given; ``loss`` says how
    the loss pickles (as in the released file, or as the project's writer once did)."""
    from gluonts.torch.distributions import StudentTOutput

    torch.manual_seed(seed)
    network = LagLlamaNetwork(LagLlamaConfig.from_model_kwargs(kwargs))
    named = weights if weights is not None else network.state_dict()
    state = OrderedDict((prefix + k, v.clone()) for k, v in named.items())
    adam = {
        i: {"step": torch.tensor(100.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": p.abs()}
        for i, p in enumerate(network.parameters())
    }
    with gone_loss_module(loss) as nll:
        hyper = {
            "model_kwargs": {**kwargs, "distr_output": StudentTOutput()},
            "context_length": 32,
            "prediction_length": 1,
            "loss": nll(),
            "lr": 1e-4,
            "weight_decay": 0.0,
            "aug_prob": 0.5,
            "freq_mask_rate": 0.5,
            "freq_mixing_rate": 0.25,
            "window_warp_scales": [0.5, 2.0],
            "data_id_to_name_map": {},
            "use_cosine_annealing_lr": False,
            "cosine_annealing_lr_args": {},
            # written before upstream added use_kv_cache and later arguments
        }
        checkpoint = {
            "epoch": 250,
            "global_step": 25_000,
            "pytorch-lightning_version": "2.1.3",
            "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}, "seen_tags": {"train", "val"}}},
            "callbacks": {
                "ModelCheckpoint{'monitor': 'val_loss'}": {
                    "best_model_score": torch.tensor(-1.5),
                    "best_model_path": "/ckpts/best.ckpt",
                    "best_k_models": {"/ckpts/best.ckpt": torch.tensor(-1.5)},
                },
                "EarlyStopping{'monitor': 'val_loss'}": {"wait_count": 3, "patience": 50},
            },
            "optimizer_states": [
                {
                    "state": adam,
                    "param_groups": [{"lr": 1e-4, "params": list(adam)}],
                }
            ],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": hyper,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(checkpoint, path)
    return {k[len(prefix) :]: v for k, v in state.items()}


def test_a_fake_released_checkpoint_loads_and_predicts(tmp_path: Path) -> None:
    kwargs = {k: v for k, v in released_model_kwargs().items() if k != "dropout"}
    file = tmp_path / "released" / CHECKPOINT_FILE
    weights = fake_released_checkpoint(file, kwargs)
    assert {
        "gluonts.torch.distributions.studentT.StudentTOutput",
        "gluonts.torch.modules.loss.NegativeLogLikelihood",
        "functools.partial",
        "builtins.getattr",
        "builtins.object",
        "builtins.set",
        "collections.OrderedDict",
    } <= pickled_globals(file)
    assert "gluonts.torch.modules.loss" not in sys.modules
    renamed = tmp_path / "renamed" / "any-name.ckpt"  # a folder's single .ckpt also loads
    renamed.parent.mkdir()
    renamed.write_bytes(file.read_bytes())
    for source in (file.parent, file, renamed.parent):
        model = load(source)
        assert model.config.n_layer == 8 and model.config.dropout == 0.0
        state = model.module.state_dict()
        assert all(torch.equal(state[k], weights[k]) for k in weights)
    assert model.hyper_parameters["lr"] == 1e-4 and "loss" not in model.hyper_parameters
    forecast = model.predict(contexts(2), 4, 3, time=axis(2))
    assert forecast.samples is not None and forecast.samples.shape == (2, 3, 4)
    assert torch.isfinite(forecast.samples).all()

    # saved again, it is the same layout and loads to the same weights
    model.save_pretrained(tmp_path / "again")
    with zipfile.ZipFile(tmp_path / "again" / CHECKPOINT_FILE):
        pass
    raw = torch.load(
        tmp_path / "again" / CHECKPOINT_FILE,
        weights_only=False,
        pickle_module=restricted_pickle,
    )
    assert list(raw) == [
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
    ]
    assert list(raw["hyper_parameters"])[:4] == [
        "model_kwargs",
        "context_length",
        "prediction_length",
        "loss",
    ]
    assert raw["hyper_parameters"]["aug_prob"] == 0.5
    assert type(raw["hyper_parameters"]["loss"]).gluonts_name == (
        "gluonts.torch.modules.loss.NegativeLogLikelihood"
    )
    again = load(tmp_path / "again")
    assert all(torch.equal(again.module.state_dict()[k], weights[k]) for k in weights)


class _RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _WalksToSubclasses:
    def __reduce__(self) -> tuple:
        return (getattr, (object, "__subclasses__"))


class _EvaluatesCode:
    """A call of a class-like global, as the writer pickles gluonts objects, but of eval."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


def test_a_checkpoint_pickling_anything_else_is_refused_unrun(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    for name, payload, pickled in (
        ("system", _RunsAShellCommand(marker), f"{os.system.__module__}.system"),
        ("getattr", _WalksToSubclasses(), "builtins.getattr(object, '__subclasses__')"),
        ("eval", _EvaluatesCode(marker), "builtins.eval"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        torch.save(
            {"state_dict": {}, "hyper_parameters": {"model_kwargs": {}, "x": payload}},
            folder / CHECKPOINT_FILE,
        )
        with pytest.raises(ModelError) as err:
            load(folder)
        assert f"not a trusted Lag-Llama checkpoint: it pickles {pickled}" in str(err.value)
    assert not marker.exists()


def test_wrong_family_or_broken_files_give_one_clear_message(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "absent")
    chronos = tmp_path / "chronos"
    chronos.mkdir()
    (chronos / "config.json").write_text(json.dumps({"chronos_config": {}}))
    (chronos / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"holds no lag-llama\.ckpt \(it holds config\.json"):
        load(chronos)
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(
        ModelError, match=r"not a Lag-Llama checkpoint: it has no hyper_parameters\.model_kwargs"
    ):
        load(plain)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match=r"cannot read .* as a PyTorch checkpoint"):
        load(garbage)
    # weights of a 1-layer model under hyper-parameters that say 2 layers
    weights = tiny().module.state_dict()
    weights["transformer.wte.weight"] = torch.zeros(8, 90)
    mismatched = tmp_path / "mismatched" / CHECKPOINT_FILE
    two_layers = {**TINY_KWARGS, "n_layer": 2}
    fake_released_checkpoint(mismatched, two_layers, weights=weights)
    with pytest.raises(ModelError) as err:
        load(mismatched)
    message = str(err.value)
    assert "do not match its Lag-Llama hyper-parameters (n_layer 2" in message
    assert "8 missing tensor(s) (transformer.h.1.rms_1.scale" in message
    assert "transformer.wte.weight is (8, 90), expected (8, 92)" in message
    other_keys = tmp_path / "other_keys" / CHECKPOINT_FILE
    fake_released_checkpoint(other_keys, TINY_KWARGS, weights=weights, prefix="net.")
    with pytest.raises(ModelError, match=r"keys do not all start with 'model\.' \(e\.g\. 'net\."):
        load(other_keys)


def test_unknown_hub_id_offline_says_how_to_use_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as err:
        LagLlamaForecaster.load(ModelSource(hub="time-series-foundation-models/Nope"), CPU)
    assert "source: {path: <folder>}" in str(err.value)
    assert "lag-llama.ckpt" in str(err.value)


def test_checkpoints_the_project_wrote_before_still_load(tmp_path: Path) -> None:
    folder = tmp_path / "old"
    weights = fake_released_checkpoint(folder / CHECKPOINT_FILE, TINY_KWARGS, loss=_OldWriterLoss)
    assert "functools.partial" in pickled_globals(folder / CHECKPOINT_FILE)
    model = load(folder)
    assert all(torch.equal(model.module.state_dict()[k], v) for k, v in weights.items())


def test_the_writer_pickles_gluonts_objects_as_calls_of_their_classes(tmp_path: Path) -> None:
    """``loss`` and ``distr_output`` are ``cls()`` (GLOBAL, EMPTY_TUPLE, REDUCE) and nothing
    else: no state for gluonts 0.14's pydantic and validated classes to misread, no partial."""
    tiny().save_pretrained(tmp_path)
    with zipfile.ZipFile(tmp_path / CHECKPOINT_FILE) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data) if "PUT" not in op.name]
    calls = {
        arg.replace(" ", "."): [name for name, _ in ops[i + 1 : i + 3]]
        for i, (name, arg) in enumerate(ops)
        if name == "GLOBAL" and arg.startswith("gluonts")
    }
    assert calls == {
        STUDENT_T_OUTPUT: ["EMPTY_TUPLE", "REDUCE"],
        f"{GONE_LOSS_MODULE}.NegativeLogLikelihood": ["EMPTY_TUPLE", "REDUCE"],
    }
    assert not {"functools.partial", "builtins.getattr", "builtins.object"} & pickled_globals(
        tmp_path / CHECKPOINT_FILE
    )
    assert GONE_LOSS_MODULE not in sys.modules


# --- upstream Lag-Llama reads what the project writes -------------------------------------------

UPSTREAM_LOADER = Path(__file__).with_name("lag_llama_upstream_load.py")


@pytest.fixture(scope="module")
def upstream_python() -> Path:
    """gluonts 0.14's environment (upstream Lag-Llama's), built once per machine."""
    from vitalfm.testing_upstream import upstream_python

    python, why = upstream_python()
    if python is None:
        pytest.skip(why)
    return python


def tensor_hash(tensor: torch.Tensor) -> str:
    """As lag_llama_upstream_load.py hashes a tensor."""
    return hashlib.sha256(tensor.detach().contiguous().numpy().tobytes()).hexdigest()[:16]


def read_upstream(python: Path, paths: list[Path]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(python), str(UPSTREAM_LOADER), *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["versions"]["gluonts"] == "0.14.4"
    return report["checkpoints"]


@pytest.mark.slow
def test_checkpoints_the_project_writes_load_in_upstream_lag_llama(
    upstream_python: Path, tmp_path: Path
) -> None:
    """A stand-in and a model fully fine-tuned from a released-layout file, saved by the
    project, load with upstream's own path in gluonts 0.14: torch.load(weights_only=False)
    gives real gluonts objects gluonts can use, and Lightning's load_from_checkpoint of a
    module with upstream's argument names loads every weight strictly."""
    standin = LagLlamaForecaster.standin("lag-llama", horizon=12, seed=0)
    fake_released_checkpoint(tmp_path / "released" / CHECKPOINT_FILE, TINY_KWARGS)
    tuned = load(tmp_path / "released")
    tuned.set_module(
        adapt(tuned.module, MethodSpec(name="full", kind="full"), tuned.target_modules())
    )
    before = {k: v.clone() for k, v in tuned.module.state_dict().items()}
    train(tuned, tmp_path / "ck", steps=2)
    assert any(not torch.equal(before[k], v) for k, v in tuned.module.state_dict().items())
    models = {"standin": standin, "full": tuned}
    paths = {name: tmp_path / name / CHECKPOINT_FILE for name in models}
    for name, model in models.items():
        model.save_pretrained(paths[name].parent)

    report = read_upstream(upstream_python, list(paths.values()))
    for name, model in models.items():
        got = report[str(paths[name])]
        assert "error" not in got, f"{name}: {got['error']}"
        assert got["top_level_keys"] == list(TOP_LEVEL_KEYS)
        loss, head = got["loss"], got["distr_output"]
        assert loss["class"] == f"{GONE_LOSS_MODULE}.NegativeLogLikelihood"
        assert loss["is_gluonts_class"] and loss["equals_a_new_one"] and loss["pickles_again"]
        assert loss["state"]["__dict__"] == {"beta": 0.0}
        assert head["class"] == STUDENT_T_OUTPUT and head["is_gluonts_class"]
        assert head["equals_a_new_one"] and head["serde_round_trip"]
        assert head["init_args"] == {}
        assert head["args_dim"] == {"df": 1, "loc": 1, "scale": 1}
        assert head["loss_of_a_student_t"]["finite"]
        assert head["loss_of_a_student_t"]["max_difference_to_torch"] < 1e-5
        # plain values as the project wrote them (JSON turns tuples into lists)
        assert got["model_kwargs"] == json.loads(json.dumps(model.config.model_kwargs()))
        expected_hyper = {**LIGHTNING_DEFAULTS, **model.hyper_parameters}
        assert got["hyper_parameters"] == json.loads(json.dumps(expected_hyper))
        weights = {
            f"model.{k}": [list(v.shape), tensor_hash(v)]
            for k, v in model.module.state_dict().items()
        }
        assert got["state_dict"] == weights
        lightning = got["lightning"]
        assert "error" not in lightning, f"{name}: {lightning['error']}"
        assert lightning["loss"] == loss["class"] and lightning["loss_is_gluonts_class"]
        assert lightning["distr_output"] == STUDENT_T_OUTPUT
        assert lightning["context_length"] == model.hyper_parameters["context_length"]
        assert lightning["state_dict"] == weights
    assert report[str(paths["standin"])]["hyper_parameters"]["prediction_length"] == 12
    assert report[str(paths["full"])]["hyper_parameters"]["lr"] == 1e-4  # the released file's


# --- features ------------------------------------------------------------------------------


def test_lag_features_equal_an_independent_numpy_computation() -> None:
    rng = np.random.default_rng(0)
    lags, prior, tokens = SPEC_LAGS, max(SPEC_LAGS), 7
    history = rng.normal(size=(3, prior + tokens)).astype(np.float32)
    got = lag_features(torch.from_numpy(history), prior, 2, tokens, lags).numpy()
    expected = np.empty((3, tokens - 2, len(lags)), dtype=np.float32)
    for t in range(2, tokens):
        for j, lag in enumerate(lags):
            expected[:, t - 2, j] = history[:, prior + t - lag]
    np.testing.assert_array_equal(got, expected)


def test_robust_scaler_follows_the_reference_rules() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(50, 10, (4, 30)).astype(np.float32)
    observed = (rng.random((4, 30)) > 0.3).astype(np.float32)
    observed[2] = 0  # nothing observed: loc 0, scale 1
    values[3] = 7.0  # constant: the IQR is 0, floored at 1e-10
    loc, scale = robust_scale(torch.from_numpy(values), torch.from_numpy(observed))
    for row in (0, 1):
        kept = np.sort(values[row][observed[row] > 0])
        assert loc[row, 0] == kept[(len(kept) - 1) // 2]  # the lower middle value
        iqr = np.quantile(kept, 0.75) - np.quantile(kept, 0.25)
        assert scale[row, 0] == pytest.approx(iqr, rel=1e-5)
    assert (loc[2, 0], scale[2, 0]) == (0.0, 1.0)
    assert loc[3, 0] == 7.0 and scale[3, 0] == pytest.approx(1e-10)


def test_calendar_features_are_gluonts_second_features_of_each_timestamp() -> None:
    from gluonts.time_feature import time_features_from_frequency_str

    assert [f.__name__ for f in CALENDAR_FEATURES] == [
        f.__name__ for f in time_features_from_frequency_str("s")
    ]
    # 2020-09-13 12:26:40 UTC, a Sunday, day 257 of a leap year
    features = calendar_features(TimeAxis(np.array([1_600_000_000]), 900), 3, -1)
    assert (features[0, 0] == 0).all()  # before the first point (left padding)
    expected = [40 / 59 - 0.5, 26 / 59 - 0.5, 12 / 23 - 0.5, 6 / 6 - 0.5, 12 / 30 - 0.5]
    np.testing.assert_allclose(features[0, 1, :5], expected, rtol=1e-6)
    assert features[0, 1, 5] == pytest.approx(256 / 365 - 0.5)
    assert features[0, 2, 1] == pytest.approx(41 / 59 - 0.5)  # 15 minutes later


def test_rope_linear_scaling_equals_dividing_positions() -> None:
    rotary = RotaryEmbedding(16, 2048)
    positions = torch.arange(40)
    scaled = rotary(positions, RopeScaling("linear", 2.5), 40)
    divided = rotary(positions / 2.5, RopeScaling(), 40)
    assert scaled is not None and divided is not None
    torch.testing.assert_close(scaled, divided)
    x = torch.randn(2, 3, 40, 16)
    torch.testing.assert_close(apply_rope(x, scaled), apply_rope(x, divided))
    # dynamic only changes anything beyond max_context_length; nope turns RoPE off
    dynamic = rotary(positions, RopeScaling("dynamic", 2.0), 40)
    plain = rotary(positions, RopeScaling(), 40)
    torch.testing.assert_close(dynamic, plain)
    assert rotary(positions, RopeScaling("nope"), 40) is None
    longer = rotary(torch.arange(3000), RopeScaling("dynamic", 2.0), 3000)
    assert longer is not None and not torch.allclose(longer[0][-1], rotary(
        torch.arange(3000), RopeScaling(), 3000)[0][-1])  # fmt: skip


# --- forecasting and the loss ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "points"),
    [
        ({}, 40),
        ({"rope_scaling": {"type": "nope"}, "context_length": 8}, 20),
        ({"rope_scaling": {"type": "linear", "factor": 3.0}}, 1200),  # longer than needed
    ],
)
def test_kv_cache_and_recomputing_sampling_agree_for_a_seed(
    options: dict[str, Any], points: int
) -> None:
    model = forecaster(standin_model_kwargs(), seed=3)
    context, time = contexts(3, points, seed=2), axis(3)
    draws = {}
    for cached in (True, False):
        model.configure({**options, "use_kv_cache": cached})
        torch.manual_seed(11)
        draws[cached] = model.predict(context, 12, 16, time=time).samples
    assert draws[True] is not None and draws[True].shape == (3, 16, 12)
    torch.testing.assert_close(draws[True], draws[False], rtol=1e-4, atol=1e-3)
    assert draws[True].std(dim=1).min() > 0  # paths differ


def test_teacher_forced_loss_scores_what_sampling_predicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Feeding the true values as 'draws' gives the loss' horizon distributions."""
    model = forecaster(standin_model_kwargs(), seed=5)
    rng = np.random.default_rng(3)
    context = torch.from_numpy((70 + rng.normal(0, 4, (2, 40))).astype(np.float32))
    target = torch.from_numpy((70 + rng.normal(0, 4, (2, 6))).astype(np.float32))
    time = axis(2)
    values, observed, _ = model._past(context)
    loc, scale = model._scale(values, observed)
    recorded: list[tuple[torch.Tensor, ...]] = []

    def true_value(df: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        recorded.append((df, mu, sigma))
        return ((target[:, len(recorded) - 1] - loc[:, 0]) / scale[:, 0]).to(df.dtype)

    monkeypatch.setattr(lag_llama_module, "_draw", true_value)
    model.predict(context, 6, 1, time=time)
    horizon_nll = sum(
        -(
            torch.distributions.StudentT(*params).log_prob((target[:, k] - loc[:, 0]) / scale[:, 0])
            - scale[:, 0].log()
        ).sum()
        for k, params in enumerate(recorded)
    )
    context_only = model.loss(SeriesBatch(context, torch.full_like(target, np.nan), time))
    full = model.loss(SeriesBatch(context, target, time))
    scored_context = 2 * (model.context_length - 1)
    expected = (context_only * scored_context + horizon_nll) / (scored_context + target.numel())
    torch.testing.assert_close(full, expected, rtol=1e-4, atol=1e-4)


def test_rope_defaults_to_the_checkpoints_setting_as_upstreams_estimator_does() -> None:
    model = tiny()
    # The released checkpoint has no scaling, and LagLlamaEstimator's default is none:
    # 32 context + 12 horizon tokens are not stretched unless asked.
    assert model.rope_scaling(12) == RopeScaling()
    assert model.describe()["rope_scaling"] == {"rule": "checkpoint", "scaling": None}
    model.configure({"rope_scaling": "auto"})
    assert model.rope_scaling(12) == RopeScaling("linear", 44 / 32)
    assert model.describe()["rope_scaling"]["rule"] == "auto"
    model.configure({"rope_scaling": "auto", "context_length": 16})
    assert model.rope_scaling(12) == RopeScaling()  # 16 + 12 fits the trained 32
    for none in (None, "none"):
        model.configure({"rope_scaling": none})
        assert model.rope_scaling(12) == RopeScaling()
    model.configure({"rope_scaling": {"type": "dynamic", "factor": 2}})
    assert model.rope_scaling(12) == RopeScaling("dynamic", 2.0)
    assert model.describe()["rope_scaling"] == {
        "rule": "option",
        "scaling": {"type": "dynamic", "factor": 2.0},
    }
    scaled = LagLlamaNetwork(replace(model.config, rope_scaling=RopeScaling("linear", 2.0)))
    checkpoint_scaled = LagLlamaForecaster(scaled, model.source, {})
    assert checkpoint_scaled.rope_scaling(12) == RopeScaling("linear", 2.0)


def test_options_are_validated() -> None:
    model = tiny()
    bad = [
        ({"use_kv_cache": "yes"}, "option use_kv_cache = 'yes' is not true or false"),
        ({"rope_scaling": {"type": "linear", "factor": 0.5}}, "factor must be a number >= 1"),
        ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "type must be linear, dynamic"),
        ({"context_length": 0}, r"context_length = 0 is not an integer in 1\.\.2048"),
        ({"minimum_scale": -1}, "minimum_scale = -1 is not a positive number"),
        ({"patch_size": 16}, r"family lag_llama has no option\(s\) patch_size"),
    ]
    for options, message in bad:
        with pytest.raises(ModelError, match=message):
            model.configure(options)
    model.configure({"pad_short_context": False})
    with pytest.raises(ModelError) as err:
        model.predict(contexts(2, 24), 12, 4, time=axis(2))
    assert "context of 24 points is shorter than the 32+1092 the lags need without padding" in (
        str(err.value)
    )
    assert "pad_short_context: true" in str(err.value)
    assert model.predict(contexts(2, 1124), 3, 2, time=axis(2)).samples is not None
    with pytest.raises(ModelError, match="has no time axis"):
        tiny().predict(contexts(2), 3, 2)
    assert tiny().describe()["architecture"]["feature_size"] == 92


# --- adaptation -------------------------------------------------------------------------------


def window_data() -> WindowTrainingData:
    return WindowTrainingData(
        toy_windows(), toy_windows("validation", seed=1), VITALS, seed=0, validation_max_series=32
    )


def train(model: LagLlamaForecaster, path: Path, steps: int, lr: float = 1e-2) -> Any:
    return Trainer(
        model,
        window_data(),
        TrainingConfig(max_steps=steps, batch_size=8, learning_rate=lr, eval_every=steps),
        CPU,
        path,
        fingerprint={},
        progress=False,
    ).fit()


def test_layernorm_trains_the_block_rmsnorms_and_bitfit_adds_biases() -> None:
    model = tiny()
    adapt(model.module, MethodSpec(name="ln", kind="layernorm"), model.target_modules())
    trainable = [n for n, p in model.module.named_parameters() if p.requires_grad]
    assert trainable == ["transformer.h.0.rms_1.scale", "transformer.h.0.rms_2.scale"]
    model = tiny()
    adapt(model.module, MethodSpec(name="bitfit", kind="bitfit"), model.target_modules())
    trainable = {n for n, p in model.module.named_parameters() if p.requires_grad}
    linears = ("q_proj", "kv_proj", "c_proj")
    added = {f"transformer.h.0.attn.{n}.bias" for n in linears} | {
        f"transformer.h.0.mlp.{n}.bias" for n in ("c_fc1", "c_fc2", "c_proj")
    }
    existing = {"transformer.wte.bias"} | {f"param_proj.proj.{i}.bias" for i in range(3)}
    assert trainable == added | existing


def test_lora_training_leaves_base_weights_bit_identical(tmp_path: Path) -> None:
    model = tiny()
    base = {k: v.clone() for k, v in model.module.state_dict().items()}
    spec = MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16, scope="attention+ffn")
    model.set_module(adapt(model.module, spec, model.target_modules()))
    wrapped = {n for n, _ in model.module.named_modules() if n.endswith("lora_A")}
    assert len(wrapped) == 6  # q, kv, attn.c_proj, c_fc1, c_fc2, mlp.c_proj
    train(model, tmp_path, steps=3)
    after = {
        k.replace(".base_layer", ""): v
        for k, v in model.module.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert after.keys() == base.keys()
    assert [k for k in base if not torch.equal(base[k], after[k])] == []
    assert any("lora_B" in k and p.abs().sum() > 0 for k, p in model.module.named_parameters())


def test_adapter_round_trip_gives_identical_forecasts(tmp_path: Path) -> None:
    model = tiny()
    model.save_pretrained(tmp_path / "base")
    spec = MethodSpec(name="dora-r2", kind="dora", rank=2, alpha=16)
    model.set_module(adapt(model.module, spec, model.target_modules()))
    train(model, tmp_path / "ck", steps=3)
    save_adapted(model.module, spec, tmp_path / "adapter")
    with pytest.raises(ModelError, match="adapter-wrapped"):
        model.save_pretrained(tmp_path / "wrapped")
    model.set_module(merge_for_inference(model.module))
    context, time = contexts(3), axis(3)
    torch.manual_seed(0)
    trained = model.predict(context, 6, 5, time=time).samples

    reloaded = load(tmp_path / "base")
    reloaded.set_module(load_adapted(reloaded.module, spec, tmp_path / "adapter"))
    torch.manual_seed(0)
    again = reloaded.predict(context, 6, 5, time=time).samples
    torch.testing.assert_close(again, trained, rtol=1e-5, atol=1e-4)
    torch.manual_seed(0)
    untrained = load(tmp_path / "base").predict(context, 6, 5, time=time).samples
    assert not torch.allclose(untrained, trained)


def test_a_standin_trained_briefly_beats_its_zero_shot_validation_nll(tmp_path: Path) -> None:
    model = LagLlamaForecaster.standin("lag-llama", horizon=12, seed=0)
    model.module.requires_grad_(True)
    result = train(model, tmp_path, steps=30, lr=1e-2)
    assert result.best_validation_loss < result.initial_validation_loss - 0.15


@pytest.fixture(scope="module")
def window_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return toy_window_files(tmp_path_factory.mktemp("windows"))


def test_every_method_runs_end_to_end(window_files: dict[str, Path], tmp_path: Path) -> None:
    # the stand-in folder holds a tiny model in the released format (the loader takes any)
    standin_dir = tmp_path / "standin"
    tiny().save_pretrained(standin_dir)
    cfg = tiny_study_config("lag_llama", "lag-llama", vitals=VITALS)
    results = run_every_setting(cfg, every_setting(), window_files, standin_dir, tmp_path)
    for setting, (trained, _) in results.items():
        if trained is not None:
            assert np.isfinite(trained["training"]["best_validation_loss"]), setting
