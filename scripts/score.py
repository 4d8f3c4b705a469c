"""Rule score: one replicate's forecasts of a split -> per-patient sums of every metric's terms."""

from vitalfm.snakemake_script import config_of, run


def step(sm):
    from vitalfm.evaluation.scoring import score_run

    wc = sm.wildcards
    score_run(
        config_of(sm),
        f"{wc.model}/{wc.setting}/seed-{wc.seed} ({wc.split})",
        sm.input.forecasts,
        sm.input.windows,
        sm.output[0],
    )


run(snakemake, step)  # noqa: F821
