"""Rule pretrain: train a stand-in on the synthetic corpus, save it in the released format."""

from vitalfm.snakemake_script import operations_of, run, settings_of, use_rule_threads


def step(sm):
    from vitalfm.steps.models import pretrain

    use_rule_threads(sm)
    pretrain(settings_of(sm), operations_of(sm), sm.output[0], sm.params.checkpoints)


run(snakemake, step)  # noqa: F821
