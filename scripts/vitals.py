"""Rule vitals: stream the cohort's vital signs from chartevents into parquet."""

from vitalfm.snakemake_script import operations_of, run, settings_of, synthetic_dir_of
from vitalfm.steps.cohort import vitals

run(
    snakemake,  # noqa: F821
    lambda sm: vitals(
        settings_of(sm),
        operations_of(sm),
        synthetic_dir_of(sm),
        sm.input.cohort,
        sm.output.vitals,
        sm.output.summary,
    ),
)
