# Vital-sign forecasting of ICU sepsis patients with time-series foundation models.
# Data flows one way: database -> cohort -> vitals -> grid -> splits -> windows
# -> (stand-ins pretrained on a synthetic corpus) -> fine-tuned runs and baselines -> forecasts
# -> scores -> metrics with patient-bootstrap CIs -> tables, figures and the report.
# Run: snakemake --cores all   (see README.md; the default study needs no credentials)

import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version

from vitalfm.config import read_config_file
from vitalfm.errors import ConfigError

from vitalfm.profiles import require_mappable_resources
from vitalfm.recovery import stale_lock_hint

min_version("9.19")


# --configfile replaces the default study rather than merging into it (config/paper.yaml).
if not workflow.overwrite_configfiles:
    try:  # name the file, line and column of a YAML error (Snakemake's own message does not)
        read_config_file("config.yaml")
    except ConfigError as err:
        raise WorkflowError(f"Invalid configuration: {err}") from None

    configfile: "config.yaml"



report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/database.smk"
include: "workflow/rules/cohort.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),


# After a crash: name the one command that clears the lock a killed run left.
if workflow.is_main_process and "--unlock" not in sys.argv:
    hint = stale_lock_hint()
    if hint:
        print(hint, file=sys.stderr)

# Resources no executor can map (e.g. `gpus:`, --gres in slurm_extra) stop the run here.
require_mappable_resources(workflow)
