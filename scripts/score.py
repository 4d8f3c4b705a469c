"""Rule score: one run's forecasts -> per-patient sums of every metric's terms."""

from vitalfm.snakemake_script import config_of, run


def step(sm):
    from vitalfm.evaluation.scoring import score_run

    score_run(
        config_of(sm),
        f"{sm.wildcards.model}/{sm.wildcards.setting}",
        sm.input.forecasts,
        sm.input.test,
        sm.output[0],
    )


run(snakemake, step)  # noqa: F821
