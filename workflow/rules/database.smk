# The database: a generated synthetic MIMIC-III (default), or a check of the user's server.


rule synthetic_mimic:
    output:
        directory(SYNTHETIC_DIR),
    params:
        settings=job_settings.synthetic_mimic(config),
    log:
        "results/logs/synthetic_mimic.log",
    benchmark:
        "results/benchmarks/synthetic_mimic.tsv"
    resources:
        mem_mb=2000,
        runtime=60,
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/synthetic_mimic.py"


rule check_database:
    output:
        EXTERNAL_CHECK,
    params:
        settings=job_settings.check_database(config),
    log:
        "results/logs/check_database.log",
    conda:
        "../../envs/vitalfm.yaml"
    script:
        "../../scripts/check_database.py"
