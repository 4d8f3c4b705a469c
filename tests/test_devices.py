"""Device claiming: CPU fallback, one GPU per process by flock, scheduler-granted devices.

GPUs are simulated with ``device_count=``; the locking is real (separate processes, SIGKILL).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from vitalfm.engine.devices import DeviceClaim, DeviceError, claim_device, describe_environment

# A holder process: claims a (simulated) GPU, reports it as one JSON line, holds it until its
# stdin closes, then releases it and exits.
_HOLDER = textwrap.dedent(
    """
    import json, sys
    from vitalfm.engine.devices import claim_device
    claim = claim_device("auto", device_count=2, lock_dir=sys.argv[1], wait_s=0)
    print(json.dumps({"index": claim.index, "device": str(claim.device)}), flush=True)
    sys.stdin.read()
    claim.release()
    """
)

_ENV_VARS = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "VITALFM_GPU_LOCK_DIR")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see the CI machine's own scheduler or GPU pinning."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def lock_dir(tmp_path: Path) -> Path:
    return tmp_path / "locks"


def _start_holder(lock_dir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in _ENV_VARS}
    return subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_claim(proc: subprocess.Popen[str], timeout_s: float = 60.0) -> dict:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise AssertionError("holder process did not report a claim in time")
    line = proc.stdout.readline()
    if not line:
        assert proc.stderr is not None
        raise AssertionError(f"holder process failed: {proc.stderr.read()}")
    return json.loads(line)


@pytest.fixture
def holders(lock_dir: Path) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _claim(lock_dir: Path, preference: str = "auto", **kwargs: object) -> DeviceClaim:
    kwargs.setdefault("device_count", 2)
    kwargs.setdefault("wait_s", 0)
    return claim_device(preference, lock_dir=lock_dir, **kwargs)  # type: ignore[arg-type]


def test_cpu_preference_gives_cpu(lock_dir: Path) -> None:
    claim = claim_device("cpu", lock_dir=lock_dir, device_count=2)
    assert claim.device == torch.device("cpu")
    assert claim.index is None
    assert not lock_dir.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_auto_without_cuda_falls_back_to_cpu(lock_dir: Path) -> None:
    claim = claim_device("auto", lock_dir=lock_dir)
    assert claim.device == torch.device("cpu")
    assert "no CUDA device" in claim.reason
    assert claim.describe()["gpu_name"] is None


@pytest.mark.parametrize("preference", ["cuda", "cuda:0"])
def test_cuda_without_device_is_a_user_error(lock_dir: Path, preference: str) -> None:
    with pytest.raises(DeviceError) as info:
        claim_device(preference, lock_dir=lock_dir, device_count=0)
    assert "no CUDA device" in info.value.problem
    assert "'auto' or 'cpu'" in info.value.fix


@pytest.mark.parametrize("preference", ["gpu", "cpu:1", "cuda:x", ""])
def test_unknown_preference_is_rejected(lock_dir: Path, preference: str) -> None:
    with pytest.raises(DeviceError, match="unknown device preference"):
        claim_device(preference, lock_dir=lock_dir, device_count=2)


def test_concurrent_processes_get_different_gpus_and_third_waits(
    lock_dir: Path, holders: list[subprocess.Popen[str]]
) -> None:
    holders.extend([_start_holder(lock_dir), _start_holder(lock_dir)])
    claims = [_read_claim(p) for p in holders]
    assert {c["index"] for c in claims} == {0, 1}
    assert {c["device"] for c in claims} == {"cuda:0", "cuda:1"}

    # Both held: a third claimant times out, naming the lock dir and the holders.
    start = time.monotonic()
    with pytest.raises(DeviceError) as info:
        _claim(lock_dir, wait_s=0.3, poll_s=0.05)
    assert time.monotonic() - start >= 0.3
    assert str(lock_dir) in info.value.problem
    assert f"pid={holders[0].pid}" in info.value.problem

    # A SIGKILLed holder cannot release anything itself: the kernel must drop its lock.
    killed, graceful = holders
    killed_index = claims[0]["index"]
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    with _claim(lock_dir) as claim:
        assert claim.index == killed_index
        assert claim.device == torch.device("cuda", killed_index)

        # A claimant that is already waiting gets the device once its holder exits normally.
        assert graceful.stdin is not None
        timer = threading.Timer(0.5, graceful.stdin.close)
        timer.start()
        try:
            start = time.monotonic()
            with _claim(lock_dir, wait_s=60, poll_s=0.05) as waited:
                assert waited.index == 1 - killed_index
            assert time.monotonic() - start >= 0.4
        finally:
            timer.cancel()
    assert graceful.wait(timeout=30) == 0


def test_release_is_idempotent_and_frees_the_device(lock_dir: Path) -> None:
    first = _claim(lock_dir, device_count=1)
    assert first.index == 0 and first.held
    assert first.lock_path is not None
    assert f"pid={os.getpid()}" in first.lock_path.read_text()
    # The lock excludes other claims in the same process too.
    with pytest.raises(DeviceError):
        _claim(lock_dir, device_count=1)

    first.release()
    first.release()
    assert not first.held

    with _claim(lock_dir, device_count=1) as again:
        assert again.index == 0 and again.held
    assert not again.held


def test_in_process_claims_take_distinct_gpus(lock_dir: Path) -> None:
    with _claim(lock_dir) as a, _claim(lock_dir) as b:
        assert {a.index, b.index} == {0, 1}
        assert "of 2" in a.reason and str(lock_dir) in a.reason


def test_explicit_index_claims_exactly_that_gpu(lock_dir: Path) -> None:
    with _claim(lock_dir, "cuda:1") as one:
        assert one.device == torch.device("cuda", 1) and one.index == 1
        with pytest.raises(DeviceError, match="no free GPU"):
            _claim(lock_dir, "cuda:1", wait_s=0.1, poll_s=0.02)
        with _claim(lock_dir, "cuda:0") as zero:
            assert zero.index == 0
    with pytest.raises(DeviceError, match="only 2 CUDA device"):
        _claim(lock_dir, "cuda:2")


def test_slurm_granted_device_is_used_without_lock(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    claim = _claim(lock_dir, device_count=1)
    assert claim.device == torch.device("cuda", 0)
    assert claim.index is None and not claim.held
    assert "SLURM" in claim.reason and "CUDA_VISIBLE_DEVICES=3" in claim.reason
    assert not lock_dir.exists()
    # A second job sharing the grant is not blocked (the scheduler owns the decision).
    assert _claim(lock_dir, device_count=1).device == torch.device("cuda", 0)


def test_user_pinned_single_device_is_used_without_lock(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    claim = _claim(lock_dir, device_count=1)
    assert claim.device == torch.device("cuda", 0) and not claim.held
    assert "user set CUDA_VISIBLE_DEVICES=1" in claim.reason
    with pytest.raises(DeviceError, match="only 1 CUDA device"):
        _claim(lock_dir, "cuda:1", device_count=1)


def test_several_visible_devices_are_claimed_by_physical_id(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    with _claim(lock_dir) as a, _claim(lock_dir) as b:
        assert (a.device, a.index) == (torch.device("cuda", 0), 5)
        assert (b.device, b.index) == (torch.device("cuda", 1), 7)
        assert b.lock_path == lock_dir / "gpu7.lock"
        # A job that sees the same GPUs in another order must not take them again.
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,5")
        with pytest.raises(DeviceError):
            _claim(lock_dir)
    # Physical GPU 7 is free again; in this job it is cuda:0.
    with _claim(lock_dir, "cuda:0") as c:
        assert (c.device, c.index) == (torch.device("cuda", 0), 7)


def test_slurm_with_several_devices_locks_per_job(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "17")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with _claim(lock_dir) as a, _claim(lock_dir) as b:
        assert {a.index, b.index} == {0, 1}
        assert a.lock_path is not None and a.lock_path.parent == lock_dir / "slurm-17"
        # Another SLURM job on the node sees its own GPUs renumbered from 0: no collision.
        monkeypatch.setenv("SLURM_JOB_ID", "18")
        with _claim(lock_dir) as other:
            assert other.index == 0


def test_empty_visible_devices_means_no_gpu(
    lock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    claim = _claim(lock_dir)
    assert claim.device == torch.device("cpu")
    assert "CUDA_VISIBLE_DEVICES=''" in claim.reason


def test_default_lock_dir_comes_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VITALFM_GPU_LOCK_DIR", str(tmp_path / "env-locks"))
    with claim_device("auto", device_count=1, wait_s=0) as claim:
        assert claim.lock_path == tmp_path / "env-locks" / "gpu0.lock"


def test_metadata_is_json_ready(lock_dir: Path) -> None:
    with _claim(lock_dir) as claim:
        described = json.loads(json.dumps(claim.describe()))
    assert described["device"] == "cuda:0"
    assert described["index"] == 0
    assert described["reason"] == claim.reason
    assert "gpu_name" in described
    env = json.loads(json.dumps(describe_environment()))
    assert env["torch_version"] == torch.__version__
    assert env["cuda_available"] == torch.cuda.is_available()
    assert "CUDA_VISIBLE_DEVICES" in env
