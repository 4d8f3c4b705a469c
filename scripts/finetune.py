"""Rule finetune: adapt one model with one method setting and seed (resumes from its checkpoint)."""

from vitalfm.snakemake_script import config_of, optional_input, run, use_rule_threads


def step(sm):
    from vitalfm.engine.runs import finetune

    use_rule_threads(sm)
    finetune(
        config_of(sm),
        sm.wildcards.model,
        sm.wildcards.setting,
        sm.input.train,
        sm.input.validation,
        sm.output[0],
        sm.params.checkpoints,
        standin_dir=optional_input(sm, "standin"),
        seed=int(sm.wildcards.seed),
    )


run(snakemake, step)  # noqa: F821
