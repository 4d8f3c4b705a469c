"""Rule tables: the study's tables (CSV, Markdown, LaTeX, HTML) from the metrics and run records."""

from pathlib import Path

from vitalfm.snakemake_script import config_of, run


def step(sm):
    from vitalfm.reporting.tables import build_tables

    results = Path(sm.input.metrics).parents[1]  # results/metrics/metrics.parquet
    build_tables(config_of(sm), results, Path(sm.output.study_config).parent)


run(snakemake, step)  # noqa: F821
