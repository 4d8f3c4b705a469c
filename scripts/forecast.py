"""Rule forecast: forecast every window of the validation and test splits with one replicate
of a run."""

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
        list(sm.input.windows),
        list(sm.output.forecasts),
        list(sm.output.metadata),
        run_dir=optional_input(sm, "run"),
        standin_dir=optional_input(sm, "standin"),
        out_paths=list(sm.output.paths),
    )


run(snakemake, step)  # noqa: F821
