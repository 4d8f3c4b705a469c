"""Rule clinical_events_report: the clinical_events table and figure."""

from pathlib import Path

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.report import clinical_events

    clinical_events(
        settings_of(sm),
        sm.input.events,
        sm.input.metrics,
        dict(zip(sm.params.runs, sm.input.windows, strict=True)),
        Path(sm.output.table_csv).parent,
        Path(sm.output.figure_png).parent,
    )


run(snakemake, step)  # noqa: F821
