"""Rule ``tables``: every table of :data:`vitalfm.reporting.TABLES`, in four formats, and the
effective configuration beside them.

The tables themselves live in modules of one subject each: :mod:`~.result_tables` (main
comparison, parameter efficiency, seed variance), :mod:`~.comparison_tables` (findings, rank
sweep, method comparison), :mod:`~.data_tables` (cohort, splits, vitals), :mod:`~.software`
and :mod:`~.study_config`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vitalfm.errors import DataError
from vitalfm.reporting import TABLES
from vitalfm.reporting.comparison_tables import findings, method_comparison, rank_sweep
from vitalfm.reporting.data_tables import cohort_tables
from vitalfm.reporting.formatting import write_table
from vitalfm.reporting.inputs import (
    ResultsLayout,
    check_runs_scored,
    load_gap,
    load_metrics,
    load_paired,
    load_replicates,
)
from vitalfm.reporting.lookups import run_info
from vitalfm.reporting.result_tables import main_comparison, parameter_efficiency, seed_variance
from vitalfm.reporting.software import software_table
from vitalfm.reporting.study_config import write_study_config
from vitalfm.study import study_runs

log = logging.getLogger(__name__)


def build_tables(
    cfg: Mapping[str, Any], results_dir: str | Path = "results", out_dir: str | Path | None = None
) -> dict[str, dict[str, Path]]:
    """Write every table of :data:`vitalfm.reporting.TABLES` (and the effective config).

    Returns {table name: {format: path}}.
    """
    layout = ResultsLayout(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else layout.root / "tables"
    runs = study_runs(cfg)
    if not runs:
        raise DataError("the config has no runs", "list models and methods in the config")
    metrics = load_metrics(layout)
    paired = load_paired(layout)
    replicates = load_replicates(layout)
    gap = load_gap(layout)
    check_runs_scored(runs, metrics, layout)
    info = run_info(runs, layout, metrics)
    tables = [
        findings(metrics, paired, info, gap),
        main_comparison(metrics, info, cfg, "minmax"),
        main_comparison(metrics, info, cfg, "original"),
        parameter_efficiency(metrics, info),
        rank_sweep(metrics, paired, info),
        method_comparison(metrics, paired, info, gap),
        seed_variance(replicates, info),
        *cohort_tables(layout, cfg),
        software_table(layout, runs),
    ]
    assert [t.name for t in tables] == list(TABLES), "TABLES and build_tables disagree"
    written = {}
    for table in tables:
        written[table.name] = write_table(table, out)
        log.info("table %s: %d rows", table.name, len(table.frame))
    write_study_config(cfg, out)
    return written
