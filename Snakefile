# Vital-sign forecasting of ICU sepsis patients with time-series foundation models.
# Data flows one way: database -> cohort -> vitals -> grid -> splits -> windows
# -> (stand-ins pretrained on a synthetic corpus) -> fine-tuned runs -> forecasts.
# Run: snakemake --cores all   (see README.md; the default study needs no credentials)

from snakemake.utils import min_version

min_version("9.19")


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
