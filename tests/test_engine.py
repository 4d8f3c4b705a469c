"""The training engine: the loop (early stopping, model selection, bad input), training data and
forecasting output. Resumption and checkpoints: tests/test_engine_checkpoints.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vitalfm.engine.forecast import (
    ForecastConfig,
    call_rows,
    forecast_windows,
    paths_schema,
    series_seeds,
    to_quantiles,
)
from vitalfm.engine.train import Trainer, TrainingConfig, TrainingError
from vitalfm.engine.training_data import WindowTrainingData, usable_rows
from vitalfm.errors import ConfigError
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import adapt
from vitalfm.models.base import Forecast, ModelError, TimeAxis
from vitalfm.models.baselines.persistence import PersistenceForecaster
from vitalfm.models.chronos import ChronosBoltForecaster, ChronosForecaster
from vitalfm.models.moirai import MoiraiForecaster
from vitalfm.testing import toy_windows

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SMALL = dict(
    batch_size=16,
    eval_every=3,
    checkpoint_every=2,
    validation_batch_size=64,
    validation_forecast_series=24,
)
VITALS = ("heart_rate", "mbp")
#: The config's default min-max ranges of the toy vitals.
RANGES = {"heart_rate": (0.0, 300.0), "mbp": (0.0, 190.0)}


def toy_data(
    seed: int = 0, ranges: dict[str, tuple[float, float]] | None = RANGES
) -> WindowTrainingData:
    return WindowTrainingData(
        toy_windows("train", seed=seed),
        toy_windows("validation", n_stays=2, seed=seed + 1),
        ("heart_rate", "mbp"),
        seed=seed,
        validation_max_series=64,
        ranges=ranges,
    )


def lora_bolt() -> ChronosForecaster:
    forecaster = ChronosForecaster.standin("chronos-bolt", horizon=12, seed=0)
    torch.manual_seed(0)
    spec = MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16, dropout=0.1)
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    return forecaster


def trainable(forecaster: ChronosForecaster) -> dict[str, torch.Tensor]:
    return {
        k: p.detach().clone() for k, p in forecaster.module.named_parameters() if p.requires_grad
    }


def make_trainer(
    tmp: Path,
    max_steps: int = 8,
    ranges: dict[str, tuple[float, float]] | None = RANGES,
    **kw: object,
) -> Trainer:
    """A LoRA Chronos-Bolt trainer on toy windows; with ``ranges`` it selects on CRPS."""
    config = TrainingConfig(max_steps=max_steps, **{"patience": 100, **SMALL, **kw})
    return Trainer(
        lora_bolt(),
        toy_data(ranges=ranges),
        config,
        torch.device("cpu"),
        tmp,
        fingerprint={"test": 1},
        progress=False,
    )


def test_lora_training_changes_adapters_and_improves_validation(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=12, learning_rate=5e-3, selection_metric="loss")
    before = trainable(trainer.forecaster)
    result = trainer.fit()
    after = trainable(trainer.forecaster)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert result.best_validation_loss < result.initial_validation_loss
    assert [h["step"] for h in result.history] == [0, 3, 6, 9, 12]


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=60, patience=2, eval_every=2, ranges=None)
    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0])  # best at the 3rd eval (step 4)
    snapshots: list[dict[str, torch.Tensor]] = []

    def validation_loss() -> float:
        snapshots.append(trainable(trainer.forecaster))
        return next(scripted)

    trainer.validation_loss = validation_loss  # type: ignore[method-assign]
    result = trainer.fit()
    assert result.stopped_early and result.steps == 8  # two evals without improvement
    assert result.best_step == 4 and result.best_validation_loss == 3.0
    assert result.selection_metric == "loss"  # no min-max ranges: the objective selects
    assert all(np.isnan(h["validation_crps"]) for h in result.history)
    final = trainable(trainer.forecaster)
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[-1][k]) for k in final)


def test_nan_loss_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(tmp_path)
    real_loss = trainer.forecaster.loss
    monkeypatch.setattr(trainer.forecaster, "loss", lambda batch: real_loss(batch) * np.nan)
    with pytest.raises(TrainingError, match=r"(validation|training) loss became nan"):
        trainer.fit()


def test_nan_training_loss_names_the_step_and_learning_rate(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    calls = {"n": 0}
    real_loss = trainer.forecaster.loss

    def loss(batch: object) -> torch.Tensor:
        value = real_loss(batch)
        if trainer.forecaster.module.training:
            calls["n"] += 1
            if calls["n"] == 3:
                return value * float("nan")
        return value

    trainer.forecaster.loss = loss  # type: ignore[method-assign]
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    assert "step 3" in str(err.value) and "learning rate" in str(err.value)


def test_to_quantiles_from_samples_and_native_levels() -> None:
    samples = torch.arange(101, dtype=torch.float32).repeat(2, 1)[:, :, None].expand(2, 101, 3)
    q = to_quantiles(Forecast(median=samples[:, 50], samples=samples), (0.1, 0.5, 0.95))
    assert torch.allclose(q[:, :, 0], torch.tensor([[10.0, 50.0, 95.0]] * 2))

    native = torch.tensor([[1.0, 2.0, 4.0]])[:, :, None]  # levels 0.1, 0.5, 0.9
    forecast = Forecast(median=native[:, 1], quantiles=native, quantile_levels=(0.1, 0.5, 0.9))
    q = to_quantiles(forecast, (0.025, 0.1, 0.3, 0.7, 0.975))[0, :, 0]
    assert torch.isnan(q[0]) and torch.isnan(q[4])
    assert q[1:4].tolist() == pytest.approx([1.0, 1.5, 3.0])


def test_to_quantiles_copies_native_levels_and_keeps_infinities() -> None:
    native = torch.tensor([[[-np.inf], [2.0], [np.inf]], [[1.0], [np.nan], [3.0]]])
    forecast = Forecast(median=native[:, 1], quantiles=native, quantile_levels=(0.1, 0.5, 0.9))
    q = to_quantiles(forecast, (0.1, 0.3, 0.5, 0.9, 0.95))[:, :, 0]
    assert q.dtype == torch.float32 and q.shape == (2, 5)
    assert q[0, 0] == -np.inf and q[0, 3] == np.inf and q[0, 2] == 2.0  # copied, not computed
    assert torch.isnan(q[:, 1]).all()  # between -inf and 2, between 1 and NaN: undefined
    assert torch.isnan(q[:, 4]).all()  # outside the model's levels


class SeededNoise(PersistenceForecaster):
    """A sampling stand-in: each row's paths are its last value plus noise drawn from
    ``np.random.default_rng(seeds[row])``, so a test knows every path the engine must write."""

    def predict(self, context, horizon, num_samples, time=None, seeds=None):  # type: ignore[override]
        assert seeds is not None and seeds.dtype == np.int64 and len(seeds) == len(context)
        last = torch.nan_to_num(context.float()).amax(dim=1).numpy()
        paths = np.stack(
            [
                last[i] + np.random.default_rng(int(seed)).standard_normal((num_samples, horizon))
                for i, seed in enumerate(seeds)
            ]
        ).astype(np.float32)
        samples = torch.from_numpy(paths)
        return Forecast(median=samples.quantile(0.5, dim=1), samples=samples)


def seeded_noise() -> SeededNoise:
    return SeededNoise.from_scratch({}, 24, 12, 0)  # type: ignore[return-value]


@pytest.mark.parametrize("name", ["chronos-bolt", "persistence"])
def test_every_call_has_the_batch_size_and_padding_is_discarded(name: str) -> None:
    """Calls of exactly forecast.batch_size rows rounded up to a multiple of 64 (the last
    padded with copies of its first series, with their own seeds) across vitals; the table
    holds the real series only, and equals what one call per series of the same shape
    gives."""
    forecaster = (
        ChronosForecaster.standin(name, horizon=12, seed=0)
        if name.startswith("chronos")
        else PersistenceForecaster.from_scratch({}, 24, 12, 0)
    )
    windows = toy_windows("test", n_stays=3)
    config = ForecastConfig(batch_size=8, seed=5)
    calls: list[tuple[int, np.ndarray]] = []
    predict = forecaster.predict

    def counted(context: torch.Tensor, *args: object, **kwargs: Any) -> Forecast:
        calls.append((len(context), kwargs["seeds"]))
        return predict(context, *args, **kwargs)

    forecaster.predict = counted  # type: ignore[method-assign]
    result = forecast_windows(forecaster, windows, VITALS, config, progress=False)
    series = sum(len(usable_rows(windows, v)) for v in VITALS)
    rows = call_rows(config.batch_size)
    assert rows == 64
    assert series % rows  # the last call is padded
    assert [size for size, _ in calls] == [rows] * -(-series // rows)
    assert result.facts["calls"] == len(calls)
    assert result.facts["padded_series"] == rows * len(calls) - series
    seeds = np.concatenate([s for _, s in calls])
    assert len(set(seeds.tolist())) == len(seeds)  # padding rows draw their own streams
    assert result.table.num_rows == series * 12
    assert result.paths.num_rows == 0  # quantiles only: no paths
    assert result.paths.schema == paths_schema(config.num_samples)


def test_sample_paths_are_the_forecast_samples_at_observed_points() -> None:
    windows = toy_windows("test", n_stays=3)
    config = ForecastConfig(num_samples=5, batch_size=8, seed=2)
    result = forecast_windows(seeded_noise(), windows, VITALS, config, progress=False)
    table, paths = result.table.to_pandas(), result.paths
    assert paths.schema == paths_schema(5)
    observed = table[table.observed]
    assert paths.num_rows == len(observed) > 0
    assert np.array_equal(paths.column("window_id").to_numpy(), observed.window_id.to_numpy())
    assert np.array_equal(paths.column("step").to_numpy(), observed.step.to_numpy())
    assert paths.column("vital").to_pylist() == observed.vital.astype(str).tolist()
    samples = np.stack(paths.column("samples").to_numpy(zero_copy_only=False))
    assert samples.dtype == np.float32 and samples.shape == (len(observed), 5)
    # each series' own stream, at its observed steps
    start_s = windows.window_start_seconds()
    for vital in VITALS:
        rows = usable_rows(windows, vital)
        seeds = series_seeds(
            config.seed, windows.window_icustay_ids()[rows], start_s[rows], [vital] * len(rows)
        )
        mask = windows.horizon_observed_mask(vital, rows)
        last = np.nanmax(windows.context(vital, rows), axis=1).astype(np.float32)
        for i in (0, len(rows) - 1):
            drawn = np.random.default_rng(int(seeds[i])).standard_normal((5, 12))
            expected = (last[i] + drawn).astype(np.float32)[:, mask[i]].T
            mine = (observed.window_id.to_numpy() == rows[i]) & (observed.vital == vital).to_numpy()
            assert np.array_equal(samples[mine], expected)
    # the table's quantiles are those of the same paths
    assert np.allclose(table["median"], table["q0.5"], atol=1e-5)


def test_a_quantile_family_writes_an_empty_paths_table(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from vitalfm.io import write_parquet

    config = ForecastConfig(num_samples=7, batch_size=16)
    result = forecast_windows(
        PersistenceForecaster.from_scratch({}, 24, 12, 0),
        toy_windows("test", n_stays=2),
        VITALS,
        config,
        progress=False,
    )
    write_parquet(result.paths, tmp_path / "p.parquet")
    back = pq.read_table(tmp_path / "p.parquet")
    assert back.num_rows == 0 and back.schema == paths_schema(7)


def test_forecast_table_has_truth_masks_and_ordered_quantiles() -> None:
    forecaster = ChronosForecaster.standin("chronos-2", horizon=12, seed=0)
    windows = toy_windows("test", n_stays=3)
    result = forecast_windows(
        forecaster, windows, ("heart_rate", "mbp"), ForecastConfig(batch_size=7), progress=False
    )
    table, facts = result.table, result.facts
    frame = table.to_pandas()
    expected_series = sum(len(usable_rows(windows, v)) for v in ("heart_rate", "mbp"))
    assert facts["series"] == expected_series and len(frame) == expected_series * 12
    hr = frame[frame.vital == "heart_rate"]
    rows = usable_rows(windows, "heart_rate")
    truth = windows.horizon("heart_rate", rows)
    mask = windows.horizon_observed_mask("heart_rate", rows)
    assert np.array_equal(hr.observed.to_numpy(), mask.reshape(-1))
    assert np.allclose(hr.y_true.to_numpy()[mask.reshape(-1)], truth[mask])
    assert hr.y_true[~hr.observed].isna().all()
    # An untrained model's quantiles may cross; they are kept as the model gives them.
    assert frame[["q0.025", "q0.1", "q0.5", "q0.9", "q0.975"]].notna().all().all()
    assert np.allclose(frame["median"], frame["q0.5"], atol=1e-4)
    assert json.dumps(facts)  # serialisable for the run metadata


def test_gpu_out_of_memory_suggests_a_smaller_batch(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path)
    real_loss = trainer.forecaster.loss

    def loss(batch: object) -> torch.Tensor:
        if trainer.forecaster.module.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_loss(batch)

    trainer.forecaster.loss = loss  # type: ignore[method-assign]
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    assert "batch size 16" in str(err.value) and "training.batch_size (e.g. to 8)" in str(err.value)
    assert not list(tmp_path.glob("step-*"))  # no checkpoint pretends progress


def test_windows_without_any_context_value_are_neither_trained_nor_forecast() -> None:
    windows = toy_windows("test", n_stays=2, missing_fraction=0.0)
    hr = windows.vital_index("heart_rate")
    first = windows.window_start_rows[0]
    windows.values[first : first + windows.context_steps, hr] = np.nan
    windows.observed[first : first + windows.context_steps, hr] = False
    rows = usable_rows(windows, "heart_rate")
    assert 0 in windows.windows_for("heart_rate") and 0 not in rows
    assert len(rows) == len(windows.windows_for("heart_rate")) - 1
    assert 0 in usable_rows(windows, "mbp")


def test_batches_and_forecasts_carry_when_each_window_was_measured() -> None:
    windows = toy_windows("test", n_stays=3, seed=4)
    frame = windows.index_frame()
    step_s = windows.frequency_minutes * 60
    data = WindowTrainingData(windows, windows, ("heart_rate",), seed=0, validation_max_series=64)
    batch = data.train_batch(step=0, batch_size=8)
    assert batch.time is not None and batch.time.step_s == step_s
    # the batch rows are drawn at random; compare each row's start with its window's
    rows = np.random.default_rng([0, 0, 0]).integers(0, len(data.train), 8)
    expected = frame["context_start"].to_numpy()[data.train.window_ids[rows]]
    stamps = batch.time.timestamps(windows.window_steps)
    assert (stamps[:, 0] == expected.astype("datetime64[s]")).all()
    assert (np.diff(stamps, axis=1) == np.timedelta64(step_s, "s")).all()
    assert batch.to("cpu").time is batch.time

    seen: list[TimeAxis] = []

    class Recorder(ChronosBoltForecaster):
        def predict(self, context, horizon, num_samples, time=None, seeds=None):  # type: ignore[override]
            seen.append(time)
            return super().predict(context, horizon, num_samples, time, seeds)

    recorder = Recorder(
        ChronosForecaster.standin("chronos-bolt", 12, 0).pipeline, lora_bolt().source
    )
    table = forecast_windows(
        recorder, windows, ("heart_rate",), ForecastConfig(batch_size=4), progress=False
    ).table
    first_window = table.column("window_id").to_numpy()[0]
    assert seen[0] is not None
    assert seen[0].timestamps(1)[0, 0] == frame["context_start"].to_numpy()[first_window].astype(
        "datetime64[s]"
    )
    series = table.num_rows // windows.horizon_steps  # each call of 4 rows, the last padded
    assert sum(len(axis.start_s) for axis in seen) == call_rows(4) * -(-series // call_rows(4))


def test_unknown_model_options_are_refused_with_the_allowed_ones() -> None:
    forecaster = ChronosForecaster.standin("chronos-bolt", horizon=12, seed=0)
    with pytest.raises(ModelError, match=r"family chronos has no option\(s\) patch_size"):
        forecaster.configure({"patch_size": 16})
    forecaster.configure({})
    assert forecaster.describe()["options"] == {}


# --- model selection on the validation forecast ------------------------------------------------


def scripted_metrics(
    trainer: Trainer, crps_by_step: dict[int, float], snapshots: dict[int, dict]
) -> None:
    """Replace the validation forecast by a script keyed by step (snapshotting the weights)."""

    def metrics() -> dict[str, float]:
        snapshots[trainer.step] = trainable(trainer.forecaster)
        value = crps_by_step[trainer.step]
        return {"crps": value, "mae": 2 * value, "seconds": 0.0}

    trainer.validation_forecast_metrics = metrics  # type: ignore[method-assign]


def test_selection_follows_the_forecast_metric_not_the_loss(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=60, patience=2, eval_every=2)
    losses = iter([5.0, 4.0, 3.0, 2.5, 2.0, 1.5, 1.0])  # the objective keeps falling
    trainer.validation_loss = lambda: next(losses)  # type: ignore[method-assign]
    snapshots: dict[int, dict] = {}
    scripted_metrics(trainer, {0: 0.5, 2: 0.3, 4: 0.2, 6: 0.25, 8: 0.21}, snapshots)
    result = trainer.fit()
    assert result.selection_metric == "crps"
    assert result.stopped_early and result.steps == 8  # two evals without a better CRPS
    assert result.best_step == 4 and result.best_validation_score == 0.2
    assert result.best_validation_loss == 3.0  # the loss at the best step, not its minimum
    assert result.initial_validation_score == 0.5
    final = trainable(trainer.forecaster)
    assert all(torch.equal(final[k], snapshots[4][k]) for k in final)
    assert [h["best_step"] for h in result.history] == [0, 2, 4, 4, 4]
    assert [h["validation_mae"] for h in result.history] == [1.0, 0.6, 0.4, 0.5, 0.42]
    assert {h["selection_metric"] for h in result.history} == {"crps"}


def test_selection_on_mae_and_nan_forecasts(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=6, eval_every=2, selection_metric="mae")
    values = {0: 0.5, 2: float("nan"), 4: 0.4, 6: 0.3}
    snapshots: dict[int, dict] = {}
    scripted_metrics(trainer, values, snapshots)
    trainer.validation_forecast_metrics = lambda: {  # type: ignore[method-assign]
        "crps": 0.0,
        "mae": values[trainer.step],
    }
    result = trainer.fit()
    assert result.selection_metric == "mae" and result.best_step == 6
    assert [h["best_step"] for h in result.history] == [0, 0, 4, 6]  # NaN is never the best


def test_validation_metrics_equal_the_study_scoring(tmp_path: Path) -> None:
    """CRPS and MAE of the validation forecasts are what the score and metrics rules give for
    the same forecasts (min-max scale, all vitals, whole horizon)."""
    from vitalfm.evaluation.scoring import score_forecasts

    trainer = make_trainer(tmp_path, validation_forecast_series=10_000)
    windows = toy_windows("validation", n_stays=2, seed=1)
    assert len(trainer.forecast_set) == sum(len(usable_rows(windows, v)) for v in RANGES)
    got = trainer.validation_forecast_metrics()
    table = forecast_windows(
        trainer.forecaster, windows, tuple(RANGES), ForecastConfig(num_samples=1), progress=False
    ).table
    scores = score_forecasts(table.to_pandas(), windows, RANGES, "bolt")
    cell = scores[(scores.scale == "minmax") & (scores.vital == "all") & (scores.step == 0)]
    n_points = cell["n_points"].sum()
    assert got["crps"] == pytest.approx(cell["crps"].sum() / n_points, rel=1e-6)
    assert got["mae"] == pytest.approx(cell["ae"].sum() / n_points, rel=1e-6)
    assert 0 < got["crps"] < 1 and 0 < got["mae"] < 1  # min-max units


def test_validation_forecasts_use_a_fixed_seed_and_leave_training_rng_alone(
    tmp_path: Path,
) -> None:

    forecaster = MoiraiForecaster.standin("moirai", horizon=12, seed=0)  # a sampling model
    forecaster.module.requires_grad_(True)
    config = TrainingConfig(max_steps=2, **SMALL, validation_num_samples=5)
    trainer = Trainer(forecaster, toy_data(), config, torch.device("cpu"), tmp_path, {}, False)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = trainer.validation_forecast_metrics()
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)
    second = trainer.validation_forecast_metrics()
    assert (first["crps"], first["mae"]) == (second["crps"], second["mae"])
    other = Trainer(
        forecaster, toy_data(), replace(config, seed=1), torch.device("cpu"), tmp_path, {}, False
    )
    assert other.validation_forecast_metrics()["crps"] != first["crps"]  # another subset


def test_validation_forecast_set_is_fixed_by_seed_and_knows_each_vital() -> None:
    data = toy_data()
    first, again = data.validation_forecast_set(20), toy_data().validation_forecast_set(20)
    assert first is not None and again is not None and len(first) == 20
    assert np.array_equal(first.pairs.window_ids, again.pairs.window_ids)
    expected = np.array([RANGES[v] for v in first.pairs.vitals])
    assert np.array_equal(np.c_[first.low, first.high], expected)
    # every replicate (training seed) is chosen on the same validation series
    other_seed = toy_data(seed=3).validation_forecast_set(20)
    assert other_seed is not None
    assert np.array_equal(other_seed.pairs.window_ids, first.pairs.window_ids)
    assert toy_data(ranges=None).validation_forecast_set(20) is None
    assert data.validation_forecast_set(0) is None
    whole = data.validation_forecast_set(10_000)  # at most the validation loss's series
    assert whole is not None and len(whole) == len(data.validation)
    assert np.array_equal(whole.pairs.context, data.validation.context, equal_nan=True)


def test_bad_selection_settings_are_clear_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"training\.selection_metric = 'nll'"):
        TrainingConfig(selection_metric="nll")
    with pytest.raises(ConfigError, match="validation_forecast_series = 0") as err:
        TrainingConfig(validation_forecast_series=0)
    assert "selection_metric to loss" in str(err.value)
    TrainingConfig(validation_forecast_series=0, selection_metric="loss")
    with pytest.raises(ConfigError, match="validation_num_samples"):
        TrainingConfig(validation_num_samples=0)
    with pytest.raises(ConfigError, match="minmax_ranges has no range for vital mbp"):
        toy_data(ranges={"heart_rate": (0.0, 300.0)})
    with pytest.raises(ConfigError, match=r"minmax_ranges\.mbp .* high <= low"):
        toy_data(ranges={"heart_rate": (0.0, 300.0), "mbp": (10.0, 10.0)})
    from vitalfm.config import validate_config

    training = TrainingConfig.from_config(
        validate_config({"vitals": {"names": ["heart_rate"]}})["training"]
    )
    assert (training.selection_metric, training.validation_forecast_series) == ("crps", 256)
    assert training.validation_num_samples == 20


HISTORY_KEYS = [
    "step",
    "train_loss",
    "validation_loss",
    "validation_crps",
    "validation_mae",
    "selection_metric",
    "best_step",
    "learning_rate",
    "samples_per_s",
    "validation_forecast_s",
]


def _write_history(path: Path, history: list[dict], fields: list[str]) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields, delimiter="\t", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def _stars(ax: object) -> list[tuple[float, float]]:
    return [
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
        for line in ax.get_lines()  # type: ignore[attr-defined]
        if line.get_marker() == "*"
    ]


def test_history_and_loss_curves_show_the_forecast_metric_and_the_kept_step(
    tmp_path: Path,
) -> None:
    import pandas as pd

    from vitalfm.reporting.inputs import ResultsLayout
    from vitalfm.reporting.training_figures import best_step_of, loss_figure

    trainer = make_trainer(tmp_path / "ck", max_steps=8)
    scripted_metrics(trainer, {0: 0.5, 3: 0.1, 6: 0.2, 8: 0.3}, {})
    result = trainer.fit()
    assert [list(row) for row in result.history] == [HISTORY_KEYS] * len(result.history)
    assert result.validation_forecast["series"] == 24
    assert result.validation_forecast["num_samples"] == 20

    layout = ResultsLayout(tmp_path / "results")
    _write_history(layout.run_dir("new") / "history.tsv", result.history, HISTORY_KEYS)
    old_fields = ["step", "train_loss", "validation_loss", "learning_rate", "samples_per_s"]
    _write_history(layout.run_dir("old") / "history.tsv", result.history, old_fields)
    data = pd.DataFrame(
        {
            "run": ["new", "old"],
            "first_replicate": ["new", "old"],  # the run folder of a run's first seed
            "model": ["a", "b"],
            "setting": ["lora-r2", "lora-r2"],
            "family": ["chronos", "chronos"],
            "trains": [True, True],
        }
    )
    history = pd.read_csv(layout.run_dir("new") / "history.tsv", sep="\t")
    assert best_step_of(history) == (3, "crps")
    fig = loss_figure(data, layout)
    top_a, top_b, bottom_a, bottom_b = (ax for ax in fig.axes if ax.get_visible())
    assert _stars(bottom_a) == [(3.0, 0.1)] and _stars(top_a) == []
    assert len(bottom_a.get_lines()) == 3  # CRPS, MAE, the star
    # a history from before validation forecasts: the loss's first minimum, on the loss
    losses = [h["validation_loss"] for h in result.history]
    first_min = result.history[int(np.argmin(losses))]["step"]
    assert _stars(top_b) == [(float(first_min), pytest.approx(min(losses), rel=1e-6))]
    assert _stars(bottom_b) == [] and bottom_b.texts


def test_pretraining_on_the_corpus_selects_on_the_loss(tmp_path: Path) -> None:
    from vitalfm.engine.training_data import CorpusTrainingData
    from vitalfm.synthetic.corpus import CorpusConfig, generate_corpus

    corpus = generate_corpus(CorpusConfig(n_series=64, length=96, seed=1))
    data = CorpusTrainingData(corpus, min_context=16, max_context=24, horizon=12, seed=0)
    assert data.validation_forecast_set(256) is None
    forecaster = ChronosForecaster.standin("chronos-bolt", horizon=12, seed=0)
    forecaster.module.requires_grad_(True)
    config = TrainingConfig(max_steps=2, batch_size=8, eval_every=1)  # default: crps
    trainer = Trainer(forecaster, data, config, torch.device("cpu"), tmp_path, {}, False)
    result = trainer.fit()
    assert trainer.forecast_set is None and result.selection_metric == "loss"
    assert result.best_validation_score == result.best_validation_loss
    assert result.validation_forecast == {}


def test_a_predictor_gets_each_rows_vital_and_seed_without_padding() -> None:
    """The oracle's route: a predictor sees the window rows, each row's vital and series seed
    (calls may span vitals), and only real series."""
    windows = toy_windows("test", n_stays=3)
    config = ForecastConfig(num_samples=4, batch_size=8, seed=9)
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def predictor(rows, vitals, context, time, n, seeds):  # type: ignore[no-untyped-def]
        seen.append((rows, vitals, seeds))
        paths = context.nan_to_num().amax(dim=1)[:, None, None].expand(-1, n, 12).contiguous()
        return Forecast(median=paths[:, 0], samples=paths)

    result = forecast_windows(None, windows, VITALS, config, progress=False, predictor=predictor)
    rows = np.concatenate([r for r, _, _ in seen])
    vitals = np.concatenate([v for _, v, _ in seen])
    seeds = np.concatenate([s for _, _, s in seen])
    expected_rows = np.concatenate([usable_rows(windows, v) for v in VITALS])
    assert np.array_equal(rows, expected_rows) and len(seen) == -(-len(rows) // call_rows(8))
    assert any(len(set(v.tolist())) == 2 for _, v, _ in seen)  # a call across vitals
    start_s, stays = windows.window_start_seconds(), windows.window_icustay_ids()
    assert np.array_equal(seeds, series_seeds(9, stays[rows], start_s[rows], vitals.tolist()))
    assert result.facts["padded_series"] == 0
    assert result.paths.num_rows == int(result.table.column("observed").to_numpy().sum())


def test_validation_forecasts_seed_each_series_in_calls_of_one_shape(tmp_path: Path) -> None:
    from vitalfm.engine.train import _forecast_seed

    trainer = make_trainer(tmp_path, validation_batch_size=16)
    calls: list[tuple[int, np.ndarray]] = []
    predict = trainer.forecaster.predict

    def recorded(context: torch.Tensor, *args: Any, **kwargs: Any) -> Forecast:
        calls.append((len(context), kwargs["seeds"]))
        return predict(context, *args, **kwargs)

    trainer.forecaster.predict = recorded  # type: ignore[method-assign]
    first = trainer.validation_forecast_metrics()
    pairs = trainer.forecast_set.pairs
    assert len(pairs) % call_rows(16) and {size for size, _ in calls} == {call_rows(16)}
    seeds = np.concatenate([s for _, s in calls])[: len(pairs)]
    expected = series_seeds(
        _forecast_seed(trainer.config.seed), pairs.window_ids, pairs.start_s, list(pairs.vitals)
    )
    assert np.array_equal(seeds, expected)
    assert len(set(np.concatenate([s for _, s in calls]).tolist())) == call_rows(16) * len(calls)
    assert trainer.validation_forecast_metrics()["crps"] == first["crps"]
