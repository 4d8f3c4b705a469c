# Config validation and input functions shared by all rules.

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from vitalfm import job_settings
from vitalfm.config import validate_config
from vitalfm.errors import ConfigError
from vitalfm.profiles import PREEMPTION_SIGNAL
from vitalfm.reporting import FIGURE_FORMATS, FIGURES, STUDY_CONFIG, TABLE_FORMATS, TABLES
from vitalfm.study import ORACLE, SPLITS_SCORED, find_replicate, standins, study_runs

# The config is validated here, once, when the Snakefile is parsed; no job validates it again.
# Our validator first: it names the key, the value and what is allowed in one line.
try:
    _validated = validate_config(config)
    RUNS = study_runs(_validated)
    STANDINS = standins(_validated)
except ConfigError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None
config.clear()
config.update(_validated)
# The same schema through Snakemake's own validator (it also records it for the report).
validate(config, schema="../schemas/config.schema.yaml")

SPLITS = ["train", "validation", "test"]
SYNTHETIC_DIR = "results/database/synthetic_mimic"
EXTERNAL_CHECK = "results/database/external_database.json"
# Every replicate of every run (one per seed), as (run, its path id "<model>/<setting>/seed-<k>").
REPLICATES = [(run, rep) for run in RUNS for rep in run.replicate_ids]


wildcard_constraints:
    seed=r"\d+",


def database_input():
    """What the database-reading rules depend on: the synthetic CSVs, or the server check."""
    if config["database"]["source"] == "synthetic":
        return SYNTHETIC_DIR
    return EXTERNAL_CHECK


def _run(wildcards):
    try:
        return find_replicate(config, wildcards.model, wildcards.setting, wildcards.seed)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


def standin_input(wildcards):
    """The pretrained stand-in a run starts from, if its model is a stand-in."""
    run = _run(wildcards)
    return f"results/models/standins/{run.standin}" if run.standin else []


def run_input(wildcards):
    """The fine-tuned model a forecast uses; nothing for zero-shot."""
    run = _run(wildcards)
    return f"results/runs/{run.replicate_id(int(wildcards.seed))}" if run.trains else []


def oracle_input(wildcards):
    """The oracle regenerates the synthetic database's latent states from its config."""
    return SYNTHETIC_DIR if _run(wildcards).is_oracle else []


# What `params:` mean in the rules (vitalfm.steps):
# - `settings=`: the job's settings (vitalfm.job_settings), a JSON string resolved from the
#   validated config. It is Snakemake's rerun trigger (a job reruns when the config it is
#   computed from changes, and only then) and all the job's step reads of the config: the
#   script hands it to the step, which never reads `snakemake.config`.
# - other params: paths and constants of the rule (they rerun the job too when they change).
# How a job runs (device, training.checkpoint_every and keep_checkpoints,
# vitals.stays_per_query, database.connect_timeout_s) is no rerun trigger, so it is no param:
# the script reads those keys alone from the config (vitalfm.snakemake_script.operations_of).


def pretrain_settings(wildcards):
    try:
        return job_settings.pretrain(config, wildcards.standin)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


def finetune_settings(wildcards):
    return job_settings.finetune(config, _run(wildcards), int(wildcards.seed))


def forecast_settings(wildcards):
    return job_settings.forecast(config, _run(wildcards), int(wildcards.seed))


def model_job_gpus(wildcards):
    """Model jobs take one GPU; the oracle (numpy) takes none."""
    return 0 if wildcards.model == ORACLE else 1


def get_final_outputs():
    return [
        "results/cohort/cohort_summary.tsv",
        "results/vitals/vitals_summary.tsv",
        "results/grid/grid_summary.tsv",
        "results/splits/split_summary.tsv",
        *expand("results/windows/{split}.npz", split=SPLITS),
        *[
            f"results/forecasts/{split}/{rep}.parquet"
            for split in SPLITS_SCORED
            for _, rep in REPLICATES
        ],
        "results/metrics/metrics.parquet",
        "results/metrics/paired.parquet",
        *[f"results/tables/{name}.{fmt}" for name in TABLES for fmt in TABLE_FORMATS],
        f"results/tables/{STUDY_CONFIG}",
        *[f"results/figures/{name}.{fmt}" for name in FIGURES for fmt in FIGURE_FORMATS],
        # alarms from forecasts (rule clinical_events_report)
        *[f"results/tables/clinical_events.{fmt}" for fmt in TABLE_FORMATS],
        *[f"results/figures/clinical_events.{fmt}" for fmt in FIGURE_FORMATS],
    ]


def sample_paths_output(paths):
    """The forecast rule's sample-path files: kept, or temp() when forecast.keep_sample_paths
    is false (they are large at the paper's scale and only the events rule reads them)."""
    return paths if config["forecast"]["keep_sample_paths"] else temp(paths)
