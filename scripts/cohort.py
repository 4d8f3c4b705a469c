"""Rule cohort: select the sepsis ICU stays and count every inclusion step."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import make_cohort, synthetic_dir_of

run(
    snakemake,  # noqa: F821
    lambda sm: make_cohort(
        config_of(sm), synthetic_dir_of(sm), sm.output.cohort, sm.output.summary
    ),
)
