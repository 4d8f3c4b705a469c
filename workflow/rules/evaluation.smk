# Scoring: each replicate's forecasts of each split -> per-patient sums (rule score), then every
# run's metrics on validation and test with intervals over patients and seeds, paired
# differences, the share of the persistence-to-oracle gap closed and each run's observed coverage
# at every quantile level (rule metrics; results/metrics/calibration). Only
# observed targets count. Every "best" (setting, rank, baseline) is chosen on validation.

# From vitalfm.config, not vitalfm.evaluation: parsing the Snakefile stays free of pandas.
from vitalfm.config import minmax_ranges

try:  # every configured vital needs a min-max range; say so before any job runs
    minmax_ranges(config)
except ConfigError as err:
    raise WorkflowError(f"Invalid configuration: {err}") from None


rule score:
    # One job per replicate scores every split it was forecast on (as one forecast job makes them).
    input:
        forecasts=expand(
            "results/forecasts/{split}/{{model}}/{{setting}}/seed-{{seed}}.parquet",
            split=SPLITS_SCORED,
        ),
        windows=expand("results/windows/{split}.npz", split=SPLITS_SCORED),
    output:
        expand(
            "results/scores/{split}/{{model}}/{{setting}}/seed-{{seed}}.parquet",
            split=SPLITS_SCORED,
        ),
    params:
        settings=job_settings.score(config),
        splits=list(SPLITS_SCORED),
    log:
        "results/logs/score/{model}/{setting}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/score/{model}/{setting}/seed-{seed}.tsv"
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
        scores=[
            f"results/scores/{split}/{rep}.parquet"
            for split in SPLITS_SCORED
            for _, rep in REPLICATES
        ],
    output:
        metrics="results/metrics/metrics.parquet",
        metrics_csv="results/metrics/metrics.csv",
        paired="results/metrics/paired.parquet",
        paired_csv="results/metrics/paired.csv",
        replicates="results/metrics/replicates.parquet",
        replicates_csv="results/metrics/replicates.csv",
        gap="results/metrics/oracle_gap.parquet",
        gap_csv="results/metrics/oracle_gap.csv",
        calibration="results/metrics/calibration.parquet",
        calibration_csv="results/metrics/calibration.csv",
    params:
        settings=job_settings.metrics(config),
        # (split, run id, seed) of each score file, in input order
        scored=[
            (split, run.run_id, seed)
            for split in SPLITS_SCORED
            for run in RUNS
            for seed in run.seeds
        ],
    log:
        "results/logs/metrics.log",
    benchmark:
        "results/benchmarks/metrics/metrics.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/metrics.py"


# Alarms from forecasts (table and figure clinical_events): each replicate's forecasts of each
# split -> every (window, event)'s truth, onset, context status and forecast probability (rule
# events), then every run's AUROC, AUPRC, Brier score, sensitivity, false-alarm rate and lead
# time per event, new-onset and ongoing windows apart, with intervals and paired differences
# (rule event_metrics). See vitalfm.evaluation.events for the definitions and estimators.


rule events:
    input:
        forecasts=expand(
            "results/forecasts/{split}/{{model}}/{{setting}}/seed-{{seed}}.parquet",
            split=SPLITS_SCORED,
        ),
        # the sample paths at the observed horizon points (no rows for a quantile model)
        paths=expand(
            "results/forecasts/{split}/{{model}}/{{setting}}/seed-{{seed}}.paths.parquet",
            split=SPLITS_SCORED,
        ),
        windows=expand("results/windows/{split}.npz", split=SPLITS_SCORED),
    output:
        expand(
            "results/events/{split}/{{model}}/{{setting}}/seed-{{seed}}.parquet",
            split=SPLITS_SCORED,
        ),
    params:
        settings=job_settings.events(config),
        splits=list(SPLITS_SCORED),
    log:
        "results/logs/events/{model}/{setting}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/events/{model}/{setting}/seed-{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/events.py"


rule event_metrics:
    input:
        events=[
            f"results/events/{split}/{rep}.parquet"
            for split in SPLITS_SCORED
            for _, rep in REPLICATES
        ],
    output:
        events="results/metrics/clinical_events.parquet",
        events_csv="results/metrics/clinical_events.csv",
    params:
        settings=job_settings.event_metrics(config),
        # (split, run id, seed) of each event file, in input order
        event_keys=[
            (split, run.run_id, seed)
            for split in SPLITS_SCORED
            for run in RUNS
            for seed in run.seeds
        ],
    log:
        "results/logs/event_metrics.log",
    benchmark:
        "results/benchmarks/metrics/event_metrics.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        # ~0.4 s per (replicate, split, event, window group) with 1000 test patients and 1000
        # resamples: about 2 h for the paper's 916 replicates
        runtime=180,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/event_metrics.py"
