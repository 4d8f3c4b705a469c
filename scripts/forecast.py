"""Rule forecast: forecast every test window with one run's model (zero-shot or adapted)."""

from vitalfm.snakemake_script import config_of, optional_input, run, use_rule_threads


def step(sm):
    from vitalfm.engine.runs import forecast

    use_rule_threads(sm)
    forecast(
        config_of(sm),
        sm.wildcards.model,
        sm.wildcards.setting,
        sm.input.test,
        sm.output.forecasts,
        sm.output.metadata,
        run_dir=optional_input(sm, "run"),
        standin_dir=optional_input(sm, "standin"),
    )


run(snakemake, step)  # noqa: F821
