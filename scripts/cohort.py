"""Rule cohort: select the sepsis ICU stays and count every inclusion step."""

from vitalfm.snakemake_script import operations_of, run, settings_of, synthetic_dir_of
from vitalfm.steps.cohort import cohort

run(
    snakemake,  # noqa: F821
    lambda sm: cohort(
        settings_of(sm),
        operations_of(sm),
        synthetic_dir_of(sm),
        sm.output.cohort,
        sm.output.summary,
    ),
)
