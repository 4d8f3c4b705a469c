# Scoring: each run's forecasts -> per-patient sums (rule score), then every run's metrics with
# patient-bootstrap CIs and paired differences (rule metrics). Only observed targets count.

# From vitalfm.config, not vitalfm.evaluation: parsing the Snakefile stays free of pandas.
from vitalfm.config import minmax_ranges

try:  # every configured vital needs a min-max range; say so before any job runs
    minmax_ranges(config)
except ConfigError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None


rule score:
    input:
        forecasts="results/forecasts/{model}/{setting}.parquet",
        test="results/windows/test.npz",
    output:
        "results/scores/{model}/{setting}.parquet",
    log:
        "results/logs/score/{model}/{setting}.log",
    benchmark:
        "results/benchmarks/score/{model}/{setting}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/score.py"


rule metrics:
    input:
        scores=[f"results/scores/{run.run_id}.parquet" for run in RUNS],
    output:
        metrics="results/metrics/metrics.parquet",
        metrics_csv="results/metrics/metrics.csv",
        paired="results/metrics/paired.parquet",
        paired_csv="results/metrics/paired.csv",
    params:
        runs=[run.run_id for run in RUNS],
    log:
        "results/logs/metrics.log",
    benchmark:
        "results/benchmarks/metrics/metrics.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/metrics.py"
