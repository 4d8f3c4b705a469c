"""The software-versions table: this environment's versions beside those the runs recorded."""

from __future__ import annotations

import platform
from collections.abc import Sequence

import pandas as pd

from vitalfm.provenance import git_revision, package_versions
from vitalfm.reporting import TABLES
from vitalfm.reporting.formatting import MISSING, Table
from vitalfm.reporting.inputs import ResultsLayout, read_json
from vitalfm.study import Run

#: The report's own stack, beside the packages the runs recorded.
REPORT_PACKAGES = (
    "vitalfm",
    "numpy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "tabulate",
    "snakemake",
    "torch",
)


def software_table(layout: ResultsLayout, runs: Sequence[Run]) -> Table:
    """This environment's versions of the packages the runs recorded (and of the report's own
    stack) beside the versions the runs recorded; they should agree."""
    recorded: dict[str, set[str]] = {}
    revisions: set[str] = set()
    for run in runs:
        meta = read_json(layout.forecast_json(run.replicate_ids[0]), layout.root)
        for name, version in (meta.get("software") or {}).items():
            recorded.setdefault(name, set()).add(str(version))
        if meta.get("git_revision"):
            revisions.add(str(meta["git_revision"]))
    current = package_versions(sorted(set(REPORT_PACKAGES) | set(recorded)))
    rows = [
        {"Software": "python", "Report": platform.python_version(), "Runs": MISSING},
        {"Software": "platform", "Report": platform.platform(), "Runs": MISSING},
        {
            "Software": "vitalfm git revision",
            "Report": git_revision(),
            "Runs": "; ".join(sorted(revisions)) or MISSING,
        },
    ]
    for name in sorted(set(current) | set(recorded)):
        rows.append(
            {
                "Software": name,
                "Report": current.get(name, MISSING),
                "Runs": "; ".join(sorted(recorded.get(name, ()))) or MISSING,
            }
        )
    return Table(
        "software_versions",
        TABLES["software_versions"],
        pd.DataFrame(rows),
        [
            "Report: the environment that built these tables; Runs: the versions the forecast "
            "jobs recorded (several values mean the runs were made with different versions).",
            f"{len(runs)} runs.",
        ],
    )
