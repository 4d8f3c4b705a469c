"""Rule check_database: confirm the user's MIMIC-III server can serve the study."""

from vitalfm.snakemake_script import operations_of, run, settings_of
from vitalfm.steps.database import check_database

run(
    snakemake,  # noqa: F821
    lambda sm: check_database(settings_of(sm), operations_of(sm), sm.output[0]),
)
