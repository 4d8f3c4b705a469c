"""Rule figures: the study's figures (PNG, PDF) from the metrics, forecasts and loss histories."""

from pathlib import Path

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.report import figures

    results = Path(sm.input.metrics).parents[1]  # results/metrics/metrics.parquet
    figures(
        settings_of(sm),
        results,
        Path(sm.output.rank_sweep_png).parent,
        n_examples=int(sm.params.examples),
        seed=int(sm.params.seed),
    )


run(snakemake, step)  # noqa: F821
