# From raw measurements to model inputs: regular grid, patient splits, forecasting windows.


rule grid:
    input:
        vitals="results/vitals/vitals.parquet",
        cohort="results/cohort/cohort.parquet",
    output:
        grid="results/grid/grid.parquet",
        summary=report(
            "results/grid/grid_summary.tsv",
            caption="../report/grid_summary.rst",
            category="Data",
        ),
    params:
        settings=job_settings.grid(config),
    log:
        "results/logs/grid.log",
    benchmark:
        "results/benchmarks/grid.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/grid.py"


rule split:
    # by the cohort's patients, not the grid's: no reading decides which split a patient is in
    input:
        cohort="results/cohort/cohort.parquet",
    output:
        manifest="results/splits/manifest.parquet",
        summary=report(
            "results/splits/split_summary.tsv",
            caption="../report/split_summary.rst",
            category="Data",
        ),
    params:
        settings=job_settings.split(config),
    log:
        "results/logs/split.log",
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/split.py"


rule windows:
    input:
        grid="results/grid/grid.parquet",
        manifest="results/splits/manifest.parquet",
    output:
        arrays="results/windows/{split}.npz",
        index="results/windows/{split}.parquet",
    params:
        settings=job_settings.windows(config),
    log:
        "results/logs/windows/{split}.log",
    wildcard_constraints:
        split="train|validation|test",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/windows.py"
