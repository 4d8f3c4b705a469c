"""Rule forecast: forecast every window of a split with one replicate of a run."""

from vitalfm.snakemake_script import (
    operations_of,
    optional_input,
    run,
    settings_of,
    use_rule_threads,
)


def step(sm):
    from vitalfm.steps.models import forecast

    use_rule_threads(sm)
    forecast(
        settings_of(sm),
        operations_of(sm),
        sm.input.windows,
        sm.output.forecasts,
        sm.output.metadata,
        run_dir=optional_input(sm, "run"),
        standin_dir=optional_input(sm, "standin"),
    )


run(snakemake, step)  # noqa: F821
