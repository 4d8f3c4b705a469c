"""Rule forecast: forecast every window of a split with one replicate of a run."""

from vitalfm.snakemake_script import config_of, optional_input, run, use_rule_threads


def step(sm):
    from vitalfm.engine.runs import forecast

    use_rule_threads(sm)
    forecast(
        config_of(sm),
        sm.wildcards.model,
        sm.wildcards.setting,
        sm.input.windows,
        sm.output.forecasts,
        sm.output.metadata,
        run_dir=optional_input(sm, "run"),
        standin_dir=optional_input(sm, "standin"),
        seed=int(sm.wildcards.seed),
    )


run(snakemake, step)  # noqa: F821
