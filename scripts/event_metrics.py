"""Rule event_metrics: every replicate's event tables -> the clinical_events metrics."""

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.evaluation import event_metrics

    event_metrics(settings_of(sm), sm.params.event_keys, sm.input.events, dict(sm.output.items()))


run(snakemake, step)  # noqa: F821
