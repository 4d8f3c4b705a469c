# The model half: pretrain stand-ins, fine-tune each (model, method setting, seed), forecast the
# validation and test windows with each replicate. Model jobs declare `gpu=1`, so
# `--resources gpu=2` runs two at once; each job claims a free device itself (Snakemake counts
# GPUs but never assigns them) and falls back to CPU.
#
# The training rules also declare the cluster signal that makes pre-emption and time limits
# safe (SIGTERM 5 min before the limit: checkpoint, then exit). Declared here rather than in a
# profile, it survives any override of the rule's other resources (a command-line
# --set-resources replaces a profile's whole set-resources); executors other than SLURM ignore
# it, and `python -m vitalfm.profiles` warns when a profile replaces it without one.


rule pretrain:
    output:
        directory("results/models/standins/{standin}"),
    params:
        settings=pretrain_settings,
        checkpoints="results/checkpoints/standins/{standin}",
    log:
        "results/logs/pretrain/{standin}.log",
    benchmark:
        "results/benchmarks/pretrain/{standin}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=6000,
        runtime=120,
        slurm_extra=PREEMPTION_SIGNAL,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/pretrain.py"


rule finetune:
    input:
        train="results/windows/train.npz",
        validation="results/windows/validation.npz",
        standin=standin_input,
    output:
        directory("results/runs/{model}/{setting}/seed-{seed}"),
    params:
        settings=finetune_settings,
        checkpoints="results/checkpoints/{model}/{setting}/seed-{seed}",
    log:
        "results/logs/finetune/{model}/{setting}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{model}/{setting}/seed-{seed}.tsv"
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
        slurm_extra=PREEMPTION_SIGNAL,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/finetune.py"


rule forecast:
    # One job per replicate forecasts every scored split (validation and test): the model's
    # libraries are imported and the model is loaded once.
    input:
        windows=expand("results/windows/{split}.npz", split=SPLITS_SCORED),
        run=run_input,
        standin=standin_input,
        database=oracle_input,
    output:
        forecasts=expand(
            "results/forecasts/{split}/{{model}}/{{setting}}/seed-{{seed}}.parquet",
            split=SPLITS_SCORED,
        ),
        # the sample paths at the observed horizon points (no rows for a quantile model);
        # temporary unless forecast.keep_sample_paths
        paths=sample_paths_output(
            expand(
                "results/forecasts/{split}/{{model}}/{{setting}}/seed-{{seed}}.paths.parquet",
                split=SPLITS_SCORED,
            )
        ),
        metadata=expand(
            "results/forecasts/{split}/{{model}}/{{setting}}/seed-{{seed}}.json",
            split=SPLITS_SCORED,
        ),
    params:
        settings=forecast_settings,
    log:
        "results/logs/forecast/{model}/{setting}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/forecast/{model}/{setting}/seed-{seed}.tsv"
    threads: 1
    resources:
        gpu=model_job_gpus,
        mem_mb=8000,
        runtime=60,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/forecast.py"
