"""Rule metrics: every replicate's scores -> metrics, paired differences and per-seed values."""

from vitalfm.snakemake_script import config_of, run


def step(sm):
    from vitalfm.evaluation.aggregate import write_metrics

    write_metrics(
        config_of(sm),
        {tuple(key): path for key, path in zip(sm.params.scored, sm.input.scores, strict=True)},
        dict(sm.output.items()),
    )


run(snakemake, step)  # noqa: F821
