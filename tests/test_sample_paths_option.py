"""``forecast.keep_sample_paths``: the sample paths the events rule reads are kept by default
and temporary when it is false (the paper's setting, where they take gigabytes per replicate)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vitalfm.testing import copy_checkout
from vitalfm.testing_workflow import load_study_config, run_snakemake

REPO = Path(__file__).resolve().parents[1]
REPLICATE = "persistence/zero_shot/seed-0"
EVENTS = f"results/events/test/{REPLICATE}.parquet"


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(REPO, tmp_path_factory.mktemp("checkout"))


def _events_of(checkout: Path, workdir: Path, keep: bool) -> Path:
    """Run the tiny persistence study up to one replicate's events with the option set."""
    study = workdir / "study"
    shutil.copytree(checkout, study, symlinks=True)
    cfg = load_study_config(study, "persistence")
    cfg["forecast"]["keep_sample_paths"] = keep
    (study / "study.yaml").write_text(yaml.safe_dump(cfg))
    done = run_snakemake(study, "--configfile", "study.yaml", "--cores", "2", EVENTS)
    assert done.returncode == 0, _output(done)
    assert (study / EVENTS).is_file()
    assert (study / f"results/forecasts/test/{REPLICATE}.parquet").is_file()
    return study


def _output(done: subprocess.CompletedProcess[str]) -> str:
    return (done.stdout + done.stderr)[-3000:]


@pytest.mark.parametrize("keep", [True, False], ids=["kept", "temporary"])
def test_sample_paths_are_kept_or_deleted_once_read(
    checkout: Path, tmp_path: Path, keep: bool
) -> None:
    study = _events_of(checkout, tmp_path, keep)
    for split in ("validation", "test"):
        paths = study / f"results/forecasts/{split}/{REPLICATE}.paths.parquet"
        assert paths.is_file() == keep, paths
