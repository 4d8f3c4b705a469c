"""Rule score: one replicate's forecasts of each split -> per-patient sums of every metric's
terms, one file per split."""

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.evaluation import score

    wc = sm.wildcards
    parts = zip(sm.params.splits, sm.input.forecasts, sm.input.windows, sm.output, strict=True)
    for split, forecasts, windows, out in parts:
        replicate = f"{wc.model}/{wc.setting}/seed-{wc.seed} ({split})"
        score(settings_of(sm), replicate, forecasts, windows, out)


run(snakemake, step)  # noqa: F821
