"""Rule metrics: every run's scores -> the metrics and paired-difference tables (with CIs)."""

from vitalfm.snakemake_script import config_of, run


def step(sm):
    from vitalfm.evaluation.metrics import write_metrics

    write_metrics(
        config_of(sm),
        dict(zip(sm.params.runs, sm.input.scores, strict=True)),
        sm.output.metrics,
        sm.output.metrics_csv,
        sm.output.paired,
        sm.output.paired_csv,
    )


run(snakemake, step)  # noqa: F821
