"""The from-scratch baselines: persistence, N-BEATS, N-HiTS and DLinear.

Inputs and losses against plain numpy loops, block shapes and parameter counts by hand,
training that beats persistence on a smooth toy signal, save/load round trips, the study's
rules for scratch sources, and every baseline end to end through the engine's run functions.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from vitalfm.config import validate_config
from vitalfm.engine.forecast import DEFAULT_LEVELS
from vitalfm.errors import ConfigError
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import adapt, parameter_counts
from vitalfm.models.base import ModelError, ModelSource, SeriesBatch
from vitalfm.models.baselines.inputs import (
    QUANTILE_LEVELS,
    SCALE_FLOOR_RELATIVE,
    fill_context,
    pinball_loss,
    scale_context,
)
from vitalfm.models.baselines.nbeats import NBeatsForecaster
from vitalfm.models.baselines.nhits import NHitsForecaster
from vitalfm.models.baselines.persistence import PersistenceForecaster, random_walk_sigma
from vitalfm.models.baselines.residual import ResidualBlock
from vitalfm.models.registry import forecaster_class
from vitalfm.steps import standalone
from vitalfm.study import study_runs
from vitalfm.testing import TINY_BASELINES, tiny_baseline_config, toy_windows

CPU = torch.device("cpu")
TRAINED = ("nhits", "nbeats", "dlinear")
NAN = float("nan")


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(family: str, context: int = 24, horizon: int = 12, seed: int = 0) -> Any:
    options = TINY_BASELINES[family].get("options", {})
    return forecaster_class(family).from_scratch(options, context, horizon, seed)


def holed_contexts(n: int = 6, length: int = 24, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    values = 80 + np.cumsum(rng.normal(0, 2, (n, length)), axis=1)
    values[rng.random(values.shape) < 0.25] = np.nan
    values[0, -4:] = np.nan  # ends in a gap
    values[1, :10] = np.nan  # starts with one
    values[2, :] = np.nan
    values[2, 7] = 95.0  # a single reading
    return torch.tensor(values, dtype=torch.float32)


# --- inputs and losses against plain loops ------------------------------------------------------


def test_fill_and_scale_match_a_loop() -> None:
    contexts = holed_contexts()
    filled, observed = fill_context(contexts)
    for row, out, seen in zip(contexts.numpy(), filled.numpy(), observed.numpy(), strict=True):
        assert np.array_equal(seen, np.isfinite(row))
        mean = np.nanmean(row)
        last = np.nan
        for value, got in zip(row, out, strict=True):
            last = value if np.isfinite(value) else last
            assert got == pytest.approx(last if np.isfinite(last) else mean, rel=1e-6)
    loc, scale = scale_context(filled, observed)
    for i, row in enumerate(contexts.numpy()):
        kept = row[np.isfinite(row)]
        floor = SCALE_FLOOR_RELATIVE * abs(kept.mean())
        assert loc[i, 0] == pytest.approx(kept.mean(), rel=1e-6)
        assert scale[i, 0] == pytest.approx(max(kept.std(), floor), rel=1e-5)
    assert scale[2, 0] == pytest.approx(0.95)  # one reading: spread 0, floored at 1 % of 95


def test_pinball_loss_matches_numpy() -> None:
    rng = np.random.default_rng(1)
    levels = (0.1, 0.5, 0.9)
    quantiles = rng.normal(size=(4, 3, 5)).astype(np.float32)
    target = rng.normal(size=(4, 5)).astype(np.float32)
    target[0, 1] = target[3, :] = np.nan
    losses = []
    for b, h in zip(*np.nonzero(np.isfinite(target)), strict=True):
        for j, q in enumerate(levels):
            error = target[b, h] - quantiles[b, j, h]
            losses.append(max(q * error, (q - 1) * error) / len(levels))
    expected = sum(losses) / np.isfinite(target).sum()
    got = pinball_loss(torch.from_numpy(quantiles), torch.from_numpy(target), levels)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_quantile_levels_are_the_studys() -> None:
    assert QUANTILE_LEVELS == DEFAULT_LEVELS


# --- persistence ------------------------------------------------------------------------------


def test_persistence_repeats_the_last_observed_value_with_random_walk_intervals() -> None:
    contexts = holed_contexts()
    model = PersistenceForecaster.from_scratch({}, 24, 12, seed=0)
    assert parameter_counts(model.module) == (0, 0)
    forecast = model.predict(contexts, horizon=5, num_samples=1)
    assert forecast.quantile_levels == DEFAULT_LEVELS
    for i, row in enumerate(contexts.numpy()):
        seen = np.flatnonzero(np.isfinite(row))
        last, since = row[seen[-1]], len(row) - 1 - seen[-1]
        assert np.all(forecast.median[i].numpy() == last)
        # sigma by a loop: RMS of successive changes, each over sqrt(the steps between)
        changes = [(row[b] - row[a]) / math.sqrt(b - a) for a, b in itertools.pairwise(seen)]
        sigma = math.sqrt(np.mean(np.square(changes))) if changes else 0.0
        assert float(random_walk_sigma(contexts[i : i + 1].double())[0]) == pytest.approx(sigma)
        for j, level in enumerate(DEFAULT_LEVELS):
            for h in range(5):
                expected = last + NormalDist().inv_cdf(level) * sigma * math.sqrt(since + h + 1)
                got = float(forecast.quantiles[i, j, h])
                assert got == pytest.approx(expected, rel=1e-5, abs=1e-4)
        if i == 0:
            assert since >= 4  # the context ends in a gap: intervals widen from the reading
    single = forecast.quantiles[2]
    assert torch.all(single == 95.0)  # one reading: no change to measure, a point forecast


# --- N-BEATS and N-HiTS networks ---------------------------------------------------------------


def test_nhits_block_pools_its_input_and_interpolates_its_knots() -> None:
    block = ResidualBlock(24, 12, n_quantiles=2, hidden_size=8, layers=2, pool=4, knots=4)
    assert block.mlp[0].in_features == 2 * 6  # pooled context and mask, 24 / 4 each
    with torch.no_grad():
        block.forecast.weight.zero_()
        block.forecast.bias.copy_(torch.tensor([0.0, 3.0, 3.0, 9.0, 1.0, 1.0, 1.0, 1.0]))
    backcast, forecast = block(torch.randn(5, 24), torch.ones(5, 24))
    assert backcast.shape == (5, 24) and forecast.shape == (5, 2, 12)
    knots_at = np.linspace(0, 11, 4)
    expected = np.interp(np.arange(12), knots_at, [0.0, 3.0, 3.0, 9.0])
    assert np.allclose(forecast[0, 0].detach().numpy(), expected, atol=1e-5)
    assert torch.allclose(forecast[:, 1], torch.ones(5, 12))
    # max pooling: only each window's largest input reaches the MLP
    x = torch.randn(3, 24)
    window_max = x.view(3, 6, 4).max(dim=-1, keepdim=True).values.expand(3, 6, 4).reshape(3, 24)
    lowered = x - (x < window_max) * torch.rand(3, 24)  # every other input drops
    mask = torch.ones(3, 24)
    assert not torch.equal(lowered, x)
    # (the backcast: the forecast head was zeroed above)
    assert torch.allclose(block(x, mask)[0], block(lowered, mask)[0])
    assert not torch.allclose(block(x, mask)[0], block(x - 0.5, mask)[0])


def by_hand(context: int, inputs: int, hidden: int, layers: int, outputs: int) -> int:
    """One block: Linear(inputs, hidden), (layers - 1) x Linear(hidden, hidden), then the
    backcast Linear(hidden, context) and forecast Linear(hidden, outputs), with biases."""
    count = inputs * hidden + hidden
    count += (layers - 1) * (hidden * hidden + hidden)
    return count + hidden * context + context + hidden * outputs + outputs


def test_parameter_counts_match_the_formula_and_the_built_network() -> None:
    levels = (0.1, 0.5, 0.9)
    nhits = {"stacks": 2, "hidden_size": 5, "pooling": [2, 1], "downsample": [2, 1]}
    # context 8, horizon 4: stack 1 pools to 4 points (8 inputs with the mask), 2 knots;
    # stack 2 sees 8 points (16 inputs), 4 knots
    expected = by_hand(8, 8, 5, 2, 3 * 2) + by_hand(8, 16, 5, 2, 3 * 4)
    assert expected == 394
    assert NHitsForecaster.parameter_count(nhits, 8, 4, len(levels)) == expected
    arch = NHitsForecaster.resolve_options(nhits)
    assert parameter_counts(NHitsForecaster.build_module(arch, 8, 4, levels))[1] == expected
    nbeats = {"stacks": 1, "blocks": 2, "hidden_size": 5, "layers": 3}
    expected = 2 * by_hand(8, 16, 5, 3, 3 * 4)
    assert NBeatsForecaster.parameter_count(nbeats, 8, 4, len(levels)) == expected
    arch = NBeatsForecaster.resolve_options(nbeats)
    assert parameter_counts(NBeatsForecaster.build_module(arch, 8, 4, levels))[1] == expected


def test_benchmark_sized_nhits() -> None:
    """The follow-up paper's ~700K-parameter N-HiTS, for 24 -> 12 and 72 -> 36 steps."""
    n = len(QUANTILE_LEVELS)
    assert NHitsForecaster.parameter_count({"hidden_size": 416}, 24, 12, n) == 700_473
    assert NHitsForecaster.parameter_count({"hidden_size": 312}, 72, 36, n) == 696_483
    model = NHitsForecaster.from_scratch({"hidden_size": 312}, 72, 36, seed=0)
    assert parameter_counts(model.module)[1] == 696_483


@pytest.mark.parametrize("family", TRAINED)
def test_forecast_shapes_any_context_length(family: str) -> None:
    model = build(family)
    for length in (30, 24, 10):  # longer: the last 24 points; shorter: padded as missing
        forecast = model.predict(holed_contexts(length=length), horizon=7, num_samples=9)
        assert forecast.median.shape == (6, 7)
        assert torch.isfinite(forecast.median).all()
        native = forecast.quantiles if forecast.quantiles is not None else forecast.samples
        assert native is not None and native.shape == (6, 13 if family != "dlinear" else 9, 7)
    with pytest.raises(ModelError, match="forecasts 12 steps"):
        model.predict(holed_contexts(), horizon=13, num_samples=2)


@pytest.mark.parametrize("family", ("nhits", "nbeats"))
def test_predicted_quantiles_are_the_network_outputs_sorted(family: str) -> None:
    model = build(family, seed=3)
    contexts = holed_contexts()
    forecast = model.predict(contexts, horizon=12, num_samples=1)
    x, mask, loc, scale = model._inputs(contexts)
    with torch.no_grad():
        raw = model.module(x, mask) * scale.unsqueeze(1) + loc.unsqueeze(1)
    assert torch.all(forecast.quantiles.diff(dim=1) >= 0)
    assert torch.allclose(forecast.quantiles, raw.sort(dim=1).values, rtol=1e-5)
    assert torch.equal(forecast.median, forecast.quantiles[:, DEFAULT_LEVELS.index(0.5)])


def test_seeded_init() -> None:
    a, b, c = build("nhits", seed=1), build("nhits", seed=1), build("nhits", seed=2)
    state_a, state_b, state_c = (m.module.state_dict() for m in (a, b, c))
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)


def test_option_errors() -> None:
    with pytest.raises(ModelError, match="no option"):
        NHitsForecaster.from_scratch({"width": 3}, 24, 12, 0)
    with pytest.raises(ModelError, match="a list of 3 positive integers"):
        NHitsForecaster.from_scratch({"pooling": [2, 1]}, 24, 12, 0)
    with pytest.raises(ModelError, match="odd"):
        forecaster_class("dlinear").from_scratch({"kernel_size": 4}, 24, 12, 0)
    with pytest.raises(ModelError, match="cannot be built from scratch"):
        forecaster_class("chronos").from_scratch({}, 24, 12, 0)
    model = build("nbeats")
    with pytest.raises(ModelError, match="retrain it"):
        model.configure({"hidden_size": 64})


# --- training, saving, loading ------------------------------------------------------------------


def test_an_adapter_wrapped_baseline_is_not_saved(tmp_path: Path) -> None:
    model = build("nhits")
    model.module.peft_config = {}  # what a peft wrapper carries
    with pytest.raises(ModelError, match="adapter-wrapped"):
        model.save_pretrained(tmp_path / "nhits")
    assert not (tmp_path / "nhits").exists()


def test_save_load_round_trip_gives_identical_forecasts(tmp_path: Path) -> None:
    contexts = holed_contexts()
    for family in TRAINED:
        model = build(family, seed=4)
        model.save_pretrained(tmp_path / family)
        saved = json.loads((tmp_path / family / "config.json").read_text())
        assert saved["family"] == family and saved["context_steps"] == 24
        loaded = forecaster_class(family).load(ModelSource(path=str(tmp_path / family)), CPU)
        loaded.configure(TINY_BASELINES[family]["options"])
        torch.manual_seed(0)
        before = model.predict(contexts, 12, num_samples=20)
        torch.manual_seed(0)
        after = loaded.predict(contexts, 12, num_samples=20)
        for name in ("median", "quantiles", "samples"):
            a, b = getattr(before, name), getattr(after, name)
            assert (a is None and b is None) or torch.equal(a, b), (family, name)
    with pytest.raises(ModelError, match="does not hold a saved nhits model"):
        NHitsForecaster.load(ModelSource(path=str(tmp_path / "nbeats")), CPU)
    with pytest.raises(ModelError, match=r"lacks config\.json"):
        NHitsForecaster.load(ModelSource(path=str(tmp_path)), CPU)


def smooth_window_files(root: Path) -> dict[str, Path]:
    """Toy vitals (level + slow wave + noise): enough stays to learn the wave's shape."""
    files = {}
    for i, (split, stays) in enumerate((("train", 24), ("validation", 4), ("test", 6))):
        files[split] = root / f"{split}.npz"
        windows = toy_windows(split, n_stays=stays, steps_per_stay=90, stride_steps=2, seed=i)
        windows.save(files[split])
    return files


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every baseline through the engine's run functions: 120 training steps, then forecasts."""
    work = tmp_path_factory.mktemp("baselines")
    files = smooth_window_files(work)
    cfg = tiny_baseline_config(max_steps=120)
    out: dict[str, Any] = {"cfg": cfg, "files": files, "work": work}
    for run in study_runs(cfg):
        run_dir = work / "runs" / run.model
        meta = None
        if run.trains:
            meta = standalone.finetune(
                cfg,
                run.model,
                run.setting,
                files["train"],
                files["validation"],
                run_dir,
                work / "ck" / run.model,
            )
        parquet = work / "forecasts" / f"{run.model}.parquet"
        forecast = standalone.forecast(
            cfg,
            run.model,
            run.setting,
            files["test"],
            parquet,
            parquet.with_suffix(".json"),
            run_dir=run_dir if run.trains else None,
        )
        table = pq.read_table(parquet).to_pandas()
        out[run.model] = {"train": meta, "forecast": forecast, "table": table, "dir": run_dir}
    return out


def observed_mae(table: Any) -> float:
    scored = table[table["observed"]]
    return float((scored["y_true"] - scored["median"]).abs().mean())


@pytest.mark.parametrize("family", TRAINED)
def test_training_lowers_validation_loss_and_beats_persistence(
    trained: dict[str, Any], family: str
) -> None:
    result = trained[family]["train"]["training"]
    assert result["steps"] == 120
    assert result["best_validation_loss"] < 0.9 * result["initial_validation_loss"]
    persistence = observed_mae(trained["persistence"]["table"])
    assert observed_mae(trained[family]["table"]) < 0.9 * persistence


@pytest.mark.parametrize("family", TRAINED)
def test_scratch_runs_flow_through_the_engine(trained: dict[str, Any], family: str) -> None:
    meta, forecast = trained[family]["train"], trained[family]["forecast"]
    total = parameter_counts(build(family).module)[1]
    assert meta["parameters"] == {"trainable": total, "total": total, "base_total": total}
    assert forecast["parameters"] == meta["parameters"]
    assert meta["source"].startswith("scratch") and meta["standin"] is False
    assert meta["method"] == {"name": "scratch", "kind": "scratch", "learning_rate": 3e-3}
    assert meta["architecture"]["loss"] == ("nll" if family == "dlinear" else "pinball")
    run_dir = trained[family]["dir"]
    assert sorted(p.name for p in (run_dir / "model").iterdir()) == [
        "README.md",  # the model card: no base model, how to load it in a study
        "config.json",
        "model.safetensors",
    ]
    card = (run_dir / "model" / "README.md").read_text()
    assert "none (random init)" in card and "source: {path: <this folder>}" in card
    table = trained[family]["table"]
    quantiles = table[[f"q{q:g}" for q in DEFAULT_LEVELS]].to_numpy()
    assert np.isfinite(quantiles).all() and (np.diff(quantiles, axis=1) >= 0).all()
    assert forecast["median_finite_fraction"] == 1.0
    # the forecast is the saved model's: loading it again reproduces the medians
    model = forecaster_class(family).load(ModelSource(path=str(run_dir / "model")), CPU)
    cfg, files = trained["cfg"], trained["files"]
    again = trained["work"] / f"again-{family}.parquet"
    standalone.forecast(
        cfg, family, "scratch", files["test"], again, again.with_suffix(".json"), run_dir
    )
    assert np.array_equal(pq.read_table(again).column("median").to_numpy(), table["median"])
    assert {k: meta["architecture"][k] for k in model.architecture} == model.architecture


def test_persistence_forecasts_without_a_run_folder(trained: dict[str, Any]) -> None:
    forecast = trained["persistence"]["forecast"]
    assert forecast["parameters"] == {"trainable": 0, "total": 0, "base_total": 0}
    assert forecast["method"]["kind"] == "zero_shot"
    assert not trained["persistence"]["dir"].exists()
    table = trained["persistence"]["table"]
    windows = toy_windows("test", n_stays=6, steps_per_stay=90, stride_steps=2, seed=2)
    first = table[(table["vital"] == "mbp") & (table["step"] == 1)]
    contexts = windows.context("mbp", first["window_id"].to_numpy())
    last = [row[np.isfinite(row)][-1] for row in contexts]
    assert np.allclose(first["median"].to_numpy(), last)
    with pytest.raises(ModelError, match="zero-shot and has nothing to train"):
        standalone.finetune(
            trained["cfg"],
            "persistence",
            "zero_shot",
            trained["files"]["train"],
            trained["files"]["validation"],
            trained["work"] / "nope",
            trained["work"] / "nope-ck",
        )


def test_scratch_kind_trains_every_parameter() -> None:
    model = build("nbeats")
    spec = MethodSpec.from_config("scratch", {"kind": "scratch", "learning_rate": 1e-3})
    module = adapt(model.module.requires_grad_(False), spec, model.target_modules())
    trainable, total = parameter_counts(module)
    assert trainable == total > 0
    batch = SeriesBatch(holed_contexts(), holed_contexts(length=12, seed=5))
    model.loss(batch).backward()
    # the last block's backcast feeds nothing (as in the papers' and libraries' networks)
    last = f"blocks.{len(module.blocks) - 1}.backcast."
    for name, param in module.named_parameters():
        assert (param.grad is None) == name.startswith(last), name
    with pytest.raises(ConfigError, match="kind scratch does not use rank"):
        MethodSpec.from_config("s", {"kind": "scratch", "rank": 2})


# --- the study's rules for scratch sources --------------------------------------------------------


def study(models: dict[str, Any], methods: dict[str, Any] | None = None) -> list[Any]:
    methods = methods or {
        "zero_shot": {"kind": "zero_shot"},
        "lora": {"kind": "lora", "rank": 2},
        "scratch": {"kind": "scratch"},
    }
    return study_runs(validate_config({"models": models, "methods": methods}), oracle=False)


CHRONOS = {"family": "chronos", "source": {"standin": "chronos-t5"}}


def test_study_runs_of_baselines_and_foundation_models() -> None:
    found = study({"c": CHRONOS, **copy.deepcopy(TINY_BASELINES)})
    ids = {r.run_id: r for r in found}
    assert sorted(ids) == [
        "c/lora-r2",
        "c/zero_shot",  # methods omitted: everything but kind scratch
        "dlinear/scratch",
        "nbeats/scratch",
        "nhits/scratch",
        "persistence/zero_shot",
    ]
    assert [r.baseline for r in found] == [r.model != "c" for r in found]
    assert ids["nhits/scratch"].trains and not ids["persistence/zero_shot"].trains
    assert ids["nhits/scratch"].standin is None


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({**CHRONOS, "methods": ["scratch"]}, "is a pretrained model"),
        (
            {"family": "nhits", "source": {"scratch": True}, "methods": ["lora"]},
            "no pretrained weights to adapt",
        ),
        ({"family": "nhits", "source": {"scratch": True}}, "must list its methods"),
        (
            {"family": "persistence", "source": {"scratch": True}, "methods": ["scratch"]},
            "no parameters to train",
        ),
        (
            {"family": "nhits", "source": {"scratch": True}, "methods": ["zero_shot"]},
            "untrained, random weights",
        ),
    ],
)
def test_study_refuses_mismatched_sources_and_methods(model: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        study({"m": model})


def test_bad_scratch_sources() -> None:
    with pytest.raises(ConfigError, match="scratch"):
        validate_config({"models": {"m": {"family": "nhits", "source": {"scratch": False}}}})
    with pytest.raises(ConfigError, match="exactly one of hub, path, standin, scratch or adapter"):
        ModelSource.from_config({"scratch": True, "hub": "x/y"})
    with pytest.raises(ConfigError, match="unknown model family"):
        forecaster_class("prophet")
    with pytest.raises(ModelError, match="no saved weights"):
        NHitsForecaster.load(ModelSource(scratch=True), CPU)


def test_a_killed_scratch_run_resumes_to_the_same_model(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    cfg, files = tiny_baseline_config(max_steps=6), trained["files"]

    def finetune(name: str, stop: int | None = None) -> dict[str, Any]:
        return standalone.finetune(
            cfg,
            "nhits",
            "scratch",
            files["train"],
            files["validation"],
            tmp_path / name,
            tmp_path / f"ck-{name}",
            stop_after_steps=stop,
        )

    with pytest.raises(KeyboardInterrupt):
        finetune("killed", stop=4)
    assert not (tmp_path / "killed").exists()
    resumed = finetune("killed")
    assert resumed["training"]["resumed_from_step"] == 3  # the checkpoint every 3 steps
    finetune("whole")
    a = load_file(tmp_path / "killed" / "model" / "model.safetensors")
    b = load_file(tmp_path / "whole" / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
