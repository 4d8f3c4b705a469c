"""The paper-scale plan and the GPU bench script: the plan's arithmetic on recorded
measurements (fast), and both scripts end to end on CPU in their smoke modes (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RECORDED = BENCH / "results" / "paper_scale.json"


@pytest.fixture(scope="module")
def paper_scale():
    sys.path.insert(0, str(BENCH))
    try:
        import paper_scale
    finally:
        sys.path.remove(str(BENCH))
    return paper_scale


@pytest.fixture(scope="module")
def paper_cfg():
    from vitalfm.config import load_config

    return load_config(ROOT / "config" / "paper.yaml")


def test_paper_jobs_match_the_workflow_rules(paper_scale, paper_cfg):
    """One fine-tune per trained replicate, one forecast and one score per replicate (both
    scored splits): as ``snakemake -n --configfile config/paper.yaml`` lists them."""
    jobs = paper_scale.paper_jobs(paper_cfg)
    rules = {rule: sum(j.rule == rule for j in jobs) for rule in ("finetune", "forecast", "score")}
    assert rules == {"finetune": 840, "forecast": 916, "score": 916}
    by_id = {j.id: j for j in jobs}
    for job in jobs:
        if job.rule == "forecast" and job.depends:
            assert by_id[job.depends].rule == "finetune"
            assert (by_id[job.depends].model, by_id[job.depends].setting) == (
                job.model,
                job.setting,
            )
    steps = {j.kind: j.steps for j in jobs if j.rule == "finetune"}
    assert steps["scratch"] == 10000 and steps["lora"] == 2000


def test_every_paper_model_has_a_released_shape(paper_scale, paper_cfg):
    missing = [
        m
        for m, entry in paper_cfg["models"].items()
        if m not in paper_scale.SHAPES and entry["family"] != "persistence"
    ]
    assert missing == []


def test_schedule_respects_dependencies_and_devices(paper_scale):
    Job = paper_scale.Job
    fine = Job("finetune", "m", "lora", "lora", 0, gpu_s=10.0)
    forecast = Job("forecast", "m", "lora", "lora", 0, "test", depends=fine.id, gpu_s=5.0)
    zero = Job("forecast", "m", "zero_shot", "zero_shot", 0, "test", gpu_s=4.0)
    assert paper_scale.schedule([fine, forecast, zero], 1) == pytest.approx(19.0)
    # two devices: the zero-shot forecast runs beside the fine-tune; its forecast waits for it
    assert paper_scale.schedule([fine, forecast, zero], 2) == pytest.approx(15.0)


def test_cohort_windows(paper_scale):
    cohort = paper_scale.Cohort(stays=1000, stay_hours=33.0)
    assert cohort.windows_per_stay == 25  # 9 h windows every hour in 33 h
    assert cohort.series("test") == pytest.approx(1000 * 25 * 0.15 * 3)


@pytest.mark.skipif(not RECORDED.is_file(), reason="no recorded paper-scale measurements")
def test_plan_from_recorded_measurements_scales_with_the_cohort(paper_scale, paper_cfg):
    measured = json.loads(RECORDED.read_text())["measured"]
    small = paper_scale.plan(paper_cfg, measured, paper_scale.Cohort(1000, 120.0), [1, 2, 8])
    large = paper_scale.plan(paper_cfg, measured, paper_scale.Cohort(4000, 120.0), [1, 2, 8])
    assert small["totals"]["finetune"]["jobs"] == 840
    for plan in (small, large):
        wall = plan["wall_h"]
        total = plan["totals"]["finetune"]["gpu_h"] + plan["totals"]["forecast"]["gpu_h"]
        assert wall["1"] == pytest.approx(total, rel=1e-6)
        assert wall["1"] >= wall["2"] >= wall["8"] >= max(total / 8, plan["critical_path_gpu_h"])
    # forecasting grows with the windows; fine-tuning only through its validation subset
    assert large["totals"]["forecast"]["gpu_h"] > 3 * small["totals"]["forecast"]["gpu_h"]
    assert large["totals"]["finetune"]["gpu_h"] < 1.5 * small["totals"]["finetune"]["gpu_h"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_gpu_script_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    done = _run("gpu.py", "--device", "cpu", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["training"][0]["full"]["samples_per_s"] > 0
    assert report["forecast"][0]["identical_forecasts"]["allclose"]
    claims = report["device_claims"]
    assert claims["ok"] and claims["two_devices"]["different_devices"]
    assert claims["one_device"]["second_fails_with_device_error"]


@pytest.mark.slow
def test_paper_scale_quick_runs(tmp_path):
    out = tmp_path / "paper_scale.json"
    done = _run("paper_scale.py", "--quick", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["jobs_per_rule"]["finetune"] == 840
    assert set(report["plan"]["wall_h"]) == {"1", "2", "8"}
