"""Rule synthetic_mimic: write the synthetic MIMIC-III as PhysioNet-style CSV files."""

from vitalfm.snakemake_script import run, settings_of
from vitalfm.steps.database import synthetic_mimic

run(snakemake, lambda sm: synthetic_mimic(settings_of(sm), sm.output[0]))  # noqa: F821
