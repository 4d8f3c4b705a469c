"""Rule events: one replicate's forecasts (and sample paths) of each split -> each
(window, event)'s truth, onset and forecast probability, one file per split."""

from vitalfm.snakemake_script import run, settings_of


def step(sm):
    from vitalfm.steps.evaluation import events

    wc = sm.wildcards
    parts = zip(
        sm.params.splits,
        sm.input.forecasts,
        sm.input.windows,
        sm.input.paths,
        sm.output,
        strict=True,
    )
    for split, forecasts, windows, sample_paths, out in parts:
        replicate = f"{wc.model}/{wc.setting}/seed-{wc.seed} ({split})"
        events(settings_of(sm), replicate, forecasts, windows, out, sample_paths)


run(snakemake, step)  # noqa: F821
