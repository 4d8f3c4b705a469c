"""Rule split: assign every patient to train, validation or test."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import make_splits

run(
    snakemake,  # noqa: F821
    lambda sm: make_splits(config_of(sm), sm.input.grid, sm.output.manifest, sm.output.summary),
)
