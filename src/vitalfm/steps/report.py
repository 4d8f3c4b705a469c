"""Steps of ``workflow/rules/report.smk``: the study's tables and figures (the
:mod:`vitalfm.reporting` library), built from the metrics and the runs' records under the
results folder."""

from __future__ import annotations

from pathlib import Path

from vitalfm.steps import Settings, settings_for

#: What the tables and figures read of their settings (the whole effective config, less
#: what only says how jobs ran: vitalfm.job_settings.report).
REPORT_KEYS = ("models", "methods", "vitals", "grid", "windows", "evaluation")


def tables(settings: Settings, results_dir: str | Path, out_dir: str | Path) -> None:
    """Rule tables: every table (CSV, Markdown, LaTeX, HTML) and the study's configuration."""
    from vitalfm.reporting.tables import build_tables

    build_tables(settings_for(settings, "tables", REPORT_KEYS), Path(results_dir), Path(out_dir))


def figures(
    settings: Settings,
    results_dir: str | Path,
    out_dir: str | Path,
    n_examples: int,
    seed: int,
) -> None:
    """Rule figures: every figure (PNG, PDF); ``n_examples`` test stays in the example-forecast
    figure, drawn with ``seed``."""
    from vitalfm.reporting.figures import build_figures

    build_figures(
        settings_for(settings, "figures", REPORT_KEYS),
        Path(results_dir),
        Path(out_dir),
        n_examples=n_examples,
        seed=seed,
    )


def clinical_events(
    settings: Settings,
    events_path: str | Path,
    metrics_path: str | Path,
    window_tables: dict[str, str | Path],
    table_dir: str | Path,
    figure_dir: str | Path,
) -> None:
    """Rule clinical_events_report: the alarm table and figure from the event metrics, the
    metrics (which setting validation chose) and each run's first test event table
    (``window_tables``: run id -> file) for the ROC curves."""
    from vitalfm.reporting.event_report import build_clinical_events

    build_clinical_events(
        settings_for(settings, "clinical_events_report", REPORT_KEYS),
        events_path,
        metrics_path,
        window_tables,
        table_dir,
        figure_dir,
    )
