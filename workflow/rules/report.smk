# The study's tables and figures, each marked for `snakemake --report report.html` with a
# caption in workflow/report/. Both rules only read what the model rules wrote (seconds, no
# model is loaded) and run on the submitting host on a cluster.
#
# Tables: results/tables/<name>.{csv,md,tex,html}; figures: results/figures/<name>.{png,pdf};
# the names are vitalfm.reporting.TABLES / FIGURES.

from vitalfm.reporting import (
    FIGURE_FORMATS,
    FIGURES,
    STUDY_CONFIG,
    STUDY_CONFIG_HTML,
    TABLE_FORMATS,
    TABLES,
)

# What every table and figure is built from: the metrics, and each run's records (parameter
# counts in its first replicate's test forecast metadata, the folders of its trained
# replicates, the jobs' benchmarks).
FIRST_REPLICATES = [run.replicate_ids[0] for run in RUNS]
REPORT_RUN_INPUTS = {
    "forecast_meta": [f"results/forecasts/test/{rep}.json" for rep in FIRST_REPLICATES],
    "forecast_benchmarks": [
        f"results/benchmarks/forecast/{rep}.tsv" for rep in FIRST_REPLICATES
    ],
    "runs": [f"results/runs/{rep}" for run, rep in REPLICATES if run.trains],
    "finetune_benchmarks": [
        f"results/benchmarks/finetune/{rep}.tsv" for run, rep in REPLICATES if run.trains
    ],
}
METRICS_TABLES = {
    name: f"results/metrics/{name}.parquet"
    for name in ("metrics", "paired", "replicates", "oracle_gap", "calibration")
}

# Report category and subcategory of the tables that are not results.
REPORT_TABLE_PLACE = {
    "cohort": ("Data", "Tables"),
    "splits": ("Data", "Tables"),
    "vitals_grid": ("Data", "Tables"),
    "software_versions": ("Study", "Software"),
}


rule tables:
    input:
        **METRICS_TABLES,
        cohort="results/cohort/cohort_summary.tsv",
        vitals="results/vitals/vitals_summary.tsv",
        grid="results/grid/grid_summary.tsv",
        splits="results/splits/split_summary.tsv",
        window_index=expand("results/windows/{split}.parquet", split=SPLITS),
        **REPORT_RUN_INPUTS,
    output:
        **{
            f"{name}_{fmt}": (
                report(
                    f"results/tables/{name}.{fmt}",
                    caption=f"../report/table_{name}.rst",
                    category=REPORT_TABLE_PLACE.get(name, ("Results", "Tables"))[0],
                    subcategory=REPORT_TABLE_PLACE.get(name, ("Results", "Tables"))[1],
                    labels={"table": name, "format": fmt.upper()},
                )
                if fmt in ("html", "csv")
                else f"results/tables/{name}.{fmt}"
            )
            for name in TABLES
            for fmt in TABLE_FORMATS
        },
        study_config=report(
            f"results/tables/{STUDY_CONFIG}",
            caption="../report/study_config.rst",
            category="Study",
            subcategory="Configuration",
            labels={"file": "effective configuration", "format": "YAML"},
        ),
        study_config_html=report(
            f"results/tables/{STUDY_CONFIG_HTML}",
            caption="../report/study_config.rst",
            category="Study",
            subcategory="Configuration",
            labels={"file": "effective configuration", "format": "HTML"},
        ),
    params:
        settings=job_settings.report(config),
    log:
        "results/logs/tables.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/tables.py"


rule figures:
    input:
        **METRICS_TABLES,
        test="results/windows/test.npz",
        forecasts=[f"results/forecasts/test/{rep}.parquet" for rep in FIRST_REPLICATES],
        **REPORT_RUN_INPUTS,
    output:
        **{
            f"{name}_{fmt}": (
                report(
                    f"results/figures/{name}.{fmt}",
                    caption=f"../report/figure_{name}.rst",
                    category="Results",
                    subcategory="Figures",
                    labels={"figure": name},
                )
                if fmt == "png"
                else f"results/figures/{name}.{fmt}"
            )
            for name in FIGURES
            for fmt in FIGURE_FORMATS
        },
    params:
        settings=job_settings.report(config),
        examples=3,  # test stays in the example-forecast figure, drawn with this seed
        seed=0,
    log:
        "results/logs/figures.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/figures.py"


# Alarms from forecasts: the clinical_events table and figure (captions in workflow/report/),
# from the event metrics, the metrics (which setting validation chose) and each run's first
# test event table (ROC curves).
from vitalfm.reporting import CLINICAL_EVENTS


rule clinical_events_report:
    input:
        events="results/metrics/clinical_events.parquet",
        metrics="results/metrics/metrics.parquet",
        windows=[f"results/events/test/{rep}.parquet" for rep in FIRST_REPLICATES],
    output:
        **{
            f"table_{fmt}": (
                report(
                    f"results/tables/{CLINICAL_EVENTS}.{fmt}",
                    caption=f"../report/table_{CLINICAL_EVENTS}.rst",
                    category="Results",
                    subcategory="Tables",
                    labels={"table": CLINICAL_EVENTS, "format": fmt.upper()},
                )
                if fmt in ("html", "csv")
                else f"results/tables/{CLINICAL_EVENTS}.{fmt}"
            )
            for fmt in TABLE_FORMATS
        },
        **{
            f"figure_{fmt}": (
                report(
                    f"results/figures/{CLINICAL_EVENTS}.{fmt}",
                    caption=f"../report/figure_{CLINICAL_EVENTS}.rst",
                    category="Results",
                    subcategory="Figures",
                    labels={"figure": CLINICAL_EVENTS},
                )
                if fmt == "png"
                else f"results/figures/{CLINICAL_EVENTS}.{fmt}"
            )
            for fmt in FIGURE_FORMATS
        },
    params:
        settings=job_settings.report(config),
        runs=[run.run_id for run in RUNS],  # the run of each input event table, in order
    log:
        "results/logs/clinical_events_report.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/clinical_events_report.py"
