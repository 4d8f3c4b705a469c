"""Rule tables: the study's tables (CSV, Markdown, LaTeX, HTML) from the metrics and run records."""

from pathlib import Path

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.report import tables

    results = Path(sm.input.metrics).parents[1]  # results/metrics/metrics.parquet
    tables(settings_of(sm), results, Path(sm.output.study_config).parent)


run(snakemake, step)  # noqa: F821
