"""Rule windows: index the forecasting windows of one split."""

from vitalfm.snakemake_script import run, settings_of
from vitalfm.steps.preprocess import windows

run(
    snakemake,  # noqa: F821
    lambda sm: windows(
        settings_of(sm),
        sm.wildcards.split,
        sm.input.grid,
        sm.input.manifest,
        sm.output.arrays,
        sm.output.index,
    ),
)
