"""Rule split: assign every patient to train, validation or test."""

from vitalfm.snakemake_script import run, settings_of
from vitalfm.steps.preprocess import split

run(
    snakemake,  # noqa: F821
    lambda sm: split(settings_of(sm), sm.input.cohort, sm.output.manifest, sm.output.summary),
)
