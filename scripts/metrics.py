"""Rule metrics: every replicate's scores -> metrics, paired differences and per-seed values."""

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.evaluation import metrics

    metrics(settings_of(sm), sm.params.scored, sm.input.scores, dict(sm.output.items()))


run(snakemake, step)  # noqa: F821
