"""The training engine: resumption, early stopping, bad input; forecasting output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vitalfm.engine.data import WindowTrainingData, usable_rows
from vitalfm.engine.forecast import ForecastConfig, forecast_windows, to_quantiles
from vitalfm.engine.train import Trainer, TrainingConfig, TrainingError
from vitalfm.models.adaptation import MethodSpec, adapt
from vitalfm.models.base import Forecast, ModelError, TimeAxis
from vitalfm.models.chronos import ChronosForecaster
from vitalfm.testing import toy_windows

SMALL = dict(batch_size=16, eval_every=3, checkpoint_every=2, validation_batch_size=64)


def toy_data(seed: int = 0) -> WindowTrainingData:
    return WindowTrainingData(
        toy_windows("train", seed=seed),
        toy_windows("validation", n_stays=2, seed=seed + 1),
        ("heart_rate", "mbp"),
        seed=seed,
        validation_max_series=64,
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


def make_trainer(tmp: Path, max_steps: int = 8, **kw: object) -> Trainer:
    config = TrainingConfig(max_steps=max_steps, **{"patience": 100, **SMALL, **kw})
    return Trainer(
        lora_bolt(),
        toy_data(),
        config,
        torch.device("cpu"),
        tmp,
        fingerprint={"test": 1},
        progress=False,
    )


def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    full = make_trainer(tmp_path / "a")
    result = full.fit()
    assert result.steps == 8 and result.resumed_from_step is None

    crashed = make_trainer(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(stop_after_steps=5)  # the last checkpoint is at step 4
    resumed = make_trainer(tmp_path / "b")
    result_b = resumed.fit()
    assert result_b.resumed_from_step == 4
    a, b = trainable(full.forecaster), trainable(resumed.forecaster)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["validation_loss"] for h in full.history] == [
        h["validation_loss"] for h in resumed.history
    ]


def test_lora_training_changes_adapters_and_improves_validation(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=12, learning_rate=5e-3)
    before = trainable(trainer.forecaster)
    result = trainer.fit()
    after = trainable(trainer.forecaster)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert result.best_validation_loss < result.initial_validation_loss
    assert [h["step"] for h in result.history] == [0, 3, 6, 9, 12]


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path, max_steps=60, patience=2, eval_every=2)
    scripted = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 2.0])  # best at the 3rd eval (step 4)
    snapshots: list[dict[str, torch.Tensor]] = []

    def validation_loss() -> float:
        snapshots.append(trainable(trainer.forecaster))
        return next(scripted)

    trainer.validation_loss = validation_loss  # type: ignore[method-assign]
    result = trainer.fit()
    assert result.stopped_early and result.steps == 8  # two evals without improvement
    assert result.best_step == 4 and result.best_validation_loss == 3.0
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


def test_corrupt_or_foreign_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path).fit(stop_after_steps=4)
    latest = sorted(tmp_path.glob("step-*"))[-1]
    with open(latest / "trainable.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff\xff\xff\xff")
    with pytest.raises(TrainingError, match="checksum") as err:
        make_trainer(tmp_path, max_steps=8).fit()
    assert f"delete {tmp_path}" in str(err.value)

    other = tmp_path / "other"
    with pytest.raises(KeyboardInterrupt):
        make_trainer(other).fit(stop_after_steps=4)
    changed = make_trainer(other, learning_rate=0.5)
    with pytest.raises(TrainingError, match="different model, method, data"):
        changed.fit()


RUNNER = textwrap.dedent(
    """
    import sys, torch
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_engine import make_trainer
    trainer = make_trainer(Path(sys.argv[1]), max_steps=int(sys.argv[2]), checkpoint_every=1)
    slow = trainer._train_step
    def step():
        import time; time.sleep(float(sys.argv[3])); return slow()
    trainer._train_step = step
    from vitalfm.errors import VitalfmError
    try:
        trainer.fit()
    except VitalfmError as err:
        print(err, file=sys.stderr); sys.exit(3)
    from safetensors.torch import save_file
    save_file({{k: p.detach().contiguous() for k, p in trainer.params.items()}},
              str(Path(sys.argv[1]) / "final.safetensors"))
    """
)


def _runner(tmp_path: Path) -> Path:
    script = tmp_path / "runner.py"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent)))
    return script


def _wait_for_checkpoint(directory: Path, proc: subprocess.Popen[bytes], min_step: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = [int(p.name.split("-")[1]) for p in directory.glob("step-*")]
        if steps and max(steps) >= min_step:
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_process_resumes_to_the_same_weights(tmp_path: Path, sig: signal.Signals) -> None:
    from safetensors.torch import load_file

    script = _runner(tmp_path)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, str(script), str(reference), "6", "0"], check=True, env=env)

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir), "6", "0.4"], env=env, stderr=subprocess.PIPE
    )
    _wait_for_checkpoint(run_dir, proc, 2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGTERM:
        assert proc.returncode == 3
        assert b"SIGTERM" in stderr and b"rerun" in stderr
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "final.safetensors").exists()
    subprocess.run([sys.executable, str(script), str(run_dir), "6", "0"], check=True, env=env)
    expected, got = (
        load_file(reference / "final.safetensors"),
        load_file(run_dir / "final.safetensors"),
    )
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_to_quantiles_from_samples_and_native_levels() -> None:
    samples = torch.arange(101, dtype=torch.float32).repeat(2, 1)[:, :, None].expand(2, 101, 3)
    q = to_quantiles(Forecast(median=samples[:, 50], samples=samples), (0.1, 0.5, 0.95))
    assert torch.allclose(q[:, :, 0], torch.tensor([[10.0, 50.0, 95.0]] * 2))

    native = torch.tensor([[1.0, 2.0, 4.0]])[:, :, None]  # levels 0.1, 0.5, 0.9
    forecast = Forecast(median=native[:, 1], quantiles=native, quantile_levels=(0.1, 0.5, 0.9))
    q = to_quantiles(forecast, (0.025, 0.1, 0.3, 0.7, 0.975))[0, :, 0]
    assert torch.isnan(q[0]) and torch.isnan(q[4])
    assert q[1:4].tolist() == pytest.approx([1.0, 1.5, 3.0])


def test_forecast_table_has_truth_masks_and_ordered_quantiles() -> None:
    forecaster = ChronosForecaster.standin("chronos-2", horizon=12, seed=0)
    windows = toy_windows("test", n_stays=3)
    table, facts = forecast_windows(
        forecaster, windows, ("heart_rate", "mbp"), ForecastConfig(batch_size=7), progress=False
    )
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

    class Recorder(ChronosForecaster):
        def predict(self, context, horizon, num_samples, time=None):  # type: ignore[override]
            seen.append(time)
            return super().predict(context, horizon, num_samples, time)

    recorder = Recorder(
        ChronosForecaster.standin("chronos-bolt", 12, 0).pipeline, lora_bolt().source
    )
    table, _ = forecast_windows(
        recorder, windows, ("heart_rate",), ForecastConfig(batch_size=4), progress=False
    )
    first_window = table.column("window_id").to_numpy()[0]
    assert seen[0] is not None
    assert seen[0].timestamps(1)[0, 0] == frame["context_start"].to_numpy()[first_window].astype(
        "datetime64[s]"
    )
    assert sum(len(axis.start_s) for axis in seen) == table.num_rows // windows.horizon_steps


def test_unknown_model_options_are_refused_with_the_allowed_ones() -> None:
    forecaster = ChronosForecaster.standin("chronos-bolt", horizon=12, seed=0)
    with pytest.raises(ModelError, match=r"family chronos has no option\(s\) patch_size"):
        forecaster.configure({"patch_size": 16})
    forecaster.configure({})
    assert forecaster.describe()["options"] == {}
