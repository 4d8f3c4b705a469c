"""Rule vitals: stream the cohort's vital signs from chartevents into parquet."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import make_vitals, synthetic_dir_of

run(
    snakemake,  # noqa: F821
    lambda sm: make_vitals(
        config_of(sm), synthetic_dir_of(sm), sm.input.cohort, sm.output.vitals, sm.output.summary
    ),
)
