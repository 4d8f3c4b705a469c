"""Rule check_database: confirm the user's MIMIC-III server can serve the study."""

from vitalfm.snakemake_script import config_of, run
from vitalfm.steps import check_external_database

run(snakemake, lambda sm: check_external_database(config_of(sm), sm.output[0]))  # noqa: F821
