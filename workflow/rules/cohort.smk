# The sepsis cohort and its vital signs, read from the database.


rule cohort:
    input:
        database=database_input(),
    output:
        cohort="results/cohort/cohort.parquet",
        summary=report(
            "results/cohort/cohort_summary.tsv",
            caption="../report/cohort_summary.rst",
            category="Data",
        ),
    params:
        settings=job_settings.cohort(config),
    log:
        "results/logs/cohort.log",
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/cohort.py"


rule vitals:
    input:
        database=database_input(),
        cohort="results/cohort/cohort.parquet",
    output:
        vitals="results/vitals/vitals.parquet",
        summary=report(
            "results/vitals/vitals_summary.tsv",
            caption="../report/vitals_summary.rst",
            category="Data",
        ),
    params:
        settings=job_settings.vitals(config),
    log:
        "results/logs/vitals.log",
    benchmark:
        "results/benchmarks/vitals.tsv"
    resources:
        mem_mb=2000,
        runtime=120,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/vitals.py"
