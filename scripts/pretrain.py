"""Rule pretrain: train a stand-in on the synthetic corpus, save it in the released format."""

from vitalfm.snakemake_script import config_of, run, use_rule_threads


def step(sm):
    from vitalfm.engine.runs import pretrain_standin

    use_rule_threads(sm)
    pretrain_standin(config_of(sm), sm.wildcards.standin, sm.output[0], sm.params.checkpoints)


run(snakemake, step)  # noqa: F821
