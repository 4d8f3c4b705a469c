"""Rule synthetic_mimic: write the synthetic MIMIC-III as PhysioNet-style CSV files."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import make_synthetic

run(snakemake, lambda sm: make_synthetic(config_of(sm), sm.output[0]))  # noqa: F821
