"""The engine's checkpoints (vitalfm.engine.checkpoints, through the Trainer): a crashed, killed
or pre-empted run resumes to the weights of an uninterrupted one; damaged checkpoints are refused,
those of another configuration set aside, half-written ones cleared."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_engine import make_trainer, scripted_metrics, trainable

from vitalfm.engine.train import TrainingError

#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert full.selection_metric == "crps"
    for key in ("validation_loss", "validation_crps", "validation_mae", "best_step"):
        assert [h[key] for h in full.history] == [h[key] for h in resumed.history], key


def test_corrupt_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path).fit(stop_after_steps=4)
    latest = sorted(tmp_path.glob("step-*"))[-1]
    with open(latest / "trainable.safetensors", "r+b") as handle:
        handle.seek(200)
        handle.write(b"\xff\xff\xff\xff")
    with pytest.raises(TrainingError, match="checksum") as err:
        make_trainer(tmp_path, max_steps=8).fit()
    assert f"delete {tmp_path}" in str(err.value)


def test_checkpoints_of_another_configuration_are_set_aside_not_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "seed-0"
    with pytest.raises(KeyboardInterrupt):
        make_trainer(folder).fit(stop_after_steps=5)
    # how often checkpoints are written is not part of what they hold: still resumed
    assert make_trainer(folder, checkpoint_every=3).load_latest_checkpoint() == 4

    changed = make_trainer(folder, learning_rate=0.5)
    with caplog.at_level("WARNING"):
        result = changed.fit()
    assert result.resumed_from_step is None  # trained from step 0, not from the old weights
    fresh = make_trainer(tmp_path / "fresh", learning_rate=0.5)
    fresh.fit()
    a, b = trainable(fresh.forecaster), trainable(changed.forecaster)
    assert all(torch.equal(a[k], b[k]) for k in a)
    aside = list(tmp_path.glob("seed-0.set-aside-*"))
    assert len(aside) == 1 and list(aside[0].glob("step-*"))
    assert "another configuration" in caplog.text and str(aside[0]) in caplog.text


def test_a_checkpoint_write_killed_midway_is_cleared(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path).fit(stop_after_steps=5)
    partial = tmp_path / ".step-0000006.abc123.part"
    partial.mkdir()
    (partial / "trainable.safetensors").write_bytes(b"half")
    assert make_trainer(tmp_path).fit().resumed_from_step == 4
    assert not partial.exists()


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


def test_resume_keeps_the_best_of_the_forecast_metric(tmp_path: Path) -> None:
    """The best step (3) precedes the crash (checkpoint at 4): a resumed run must carry its
    score and weights, or step 6 would look like an improvement and be kept."""
    crps = {0: 0.5, 3: 0.1, 6: 0.2, 8: 0.3}
    full = make_trainer(tmp_path / "a")
    snapshots: dict[int, dict] = {}
    scripted_metrics(full, crps, snapshots)
    assert full.fit().best_step == 3

    crashed = make_trainer(tmp_path / "b")
    scripted_metrics(crashed, crps, {})
    with pytest.raises(KeyboardInterrupt):
        crashed.fit(stop_after_steps=5)
    resumed = make_trainer(tmp_path / "b")
    scripted_metrics(resumed, crps, {})
    result = resumed.fit()
    assert result.resumed_from_step == 4 and result.best_step == 3
    assert result.best_validation_score == 0.1 and result.initial_validation_score == 0.5
    a, b = trainable(full.forecaster), trainable(resumed.forecaster)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], snapshots[3][k]) for k in a)
