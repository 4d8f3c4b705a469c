"""Rule grid: resample each ICU stay's vitals to a regular grid (bin means, observed masks)."""

from vitalfm.snakemake_script import run, settings_of
from vitalfm.steps.preprocess import grid

run(
    snakemake,  # noqa: F821
    lambda sm: grid(
        settings_of(sm), sm.input.vitals, sm.input.cohort, sm.output.grid, sm.output.summary
    ),
)
