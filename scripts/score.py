"""Rule score: one replicate's forecasts of a split -> per-patient sums of every metric's terms."""

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.evaluation import score

    wc = sm.wildcards
    score(
        settings_of(sm),
        f"{wc.model}/{wc.setting}/seed-{wc.seed} ({wc.split})",
        sm.input.forecasts,
        sm.input.windows,
        sm.output[0],
    )


run(snakemake, step)  # noqa: F821
