"""Rule windows: index the forecasting windows of one split."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import make_windows

run(
    snakemake,  # noqa: F821
    lambda sm: make_windows(
        config_of(sm),
        sm.wildcards.split,
        sm.input.grid,
        sm.input.manifest,
        sm.output.arrays,
        sm.output.index,
    ),
)
