"""Rule grid: resample each ICU stay's vitals to a regular grid (bin means, observed masks)."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import make_grid

run(
    snakemake,  # noqa: F821
    lambda sm: make_grid(
        config_of(sm), sm.input.vitals, sm.input.cohort, sm.output.grid, sm.output.summary
    ),
)
