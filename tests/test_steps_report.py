"""The report steps (vitalfm.steps.report) called with their rules' settings: every table is
what the reporting library writes from the whole config, the recorded configuration is the
settings (what the results depend on), and settings that lack what a step reads are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from reporting_testing import RAW_CONFIG, make_results

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.reporting import FIGURE_FORMATS, FIGURES, STUDY_CONFIG, TABLE_FORMATS, TABLES
from vitalfm.reporting.tables import build_tables
from vitalfm.steps import SettingsError, report


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    cfg = validate_config(RAW_CONFIG)
    results = tmp_path_factory.mktemp("report") / "results"
    make_results(results, cfg)
    return cfg, results


def test_tables_from_the_settings_equal_those_from_the_whole_config(
    study: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, results = study
    report.tables(job_settings.report(cfg), results, tmp_path / "steps")
    build_tables(cfg, results, tmp_path / "config")
    for name in TABLES:
        for fmt in TABLE_FORMATS:
            step = (tmp_path / "steps" / f"{name}.{fmt}").read_bytes()
            assert step == (tmp_path / "config" / f"{name}.{fmt}").read_bytes(), (name, fmt)
    recorded = yaml.safe_load((tmp_path / "steps" / STUDY_CONFIG).read_text())
    assert recorded == json.loads(job_settings.report(cfg))
    assert list(recorded) == [key for key in cfg if key != "device"]  # in the config's order
    assert "checkpoint_every" not in recorded["training"]  # how jobs ran is no setting


def test_figures_are_written_from_the_settings(
    study: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, results = study
    report.figures(job_settings.report(cfg), results, tmp_path, n_examples=2, seed=0)
    for name in FIGURES:
        for fmt in FIGURE_FORMATS:
            assert (tmp_path / f"{name}.{fmt}").stat().st_size > 0, (name, fmt)


def test_each_step_refuses_settings_of_another_rule(
    study: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    cfg, results = study
    with pytest.raises(SettingsError) as err:
        report.tables(job_settings.score(cfg), results, tmp_path / "t")
    assert "step tables lack models, methods" in err.value.problem
    assert "vitalfm.job_settings.report" in err.value.fix
    with pytest.raises(SettingsError, match="step figures lack models"):
        report.figures(job_settings.split(cfg), results, tmp_path / "f", n_examples=2, seed=0)
    assert not list(tmp_path.iterdir())
