"""Rule finetune: adapt one model with one method setting and seed (resumes from its checkpoint)."""

from vitalfm.snakemake_script import (
    operations_of,
    optional_input,
    run,
    settings_of,
    use_rule_threads,
)


def step(sm):
    from vitalfm.steps.models import finetune

    use_rule_threads(sm)
    finetune(
        settings_of(sm),
        operations_of(sm),
        sm.input.train,
        sm.input.validation,
        sm.output[0],
        sm.params.checkpoints,
        standin_dir=optional_input(sm, "standin"),
    )


run(snakemake, step)  # noqa: F821
