"""Steps of ``workflow/rules/evaluation.smk``: score one replicate's forecasts, then summarise
every replicate's scores into the study's metrics (the :mod:`vitalfm.evaluation` library)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vitalfm.job_timing import phase
from vitalfm.steps import Settings, settings_for


def score(
    settings: Settings,
    replicate: str,
    forecasts_path: str | Path,
    windows_path: str | Path,
    out_path: str | Path,
) -> None:
    """Rule score: one replicate's forecasts of a split -> per-patient sums of every metric's
    terms (``replicate`` names it in messages: ``<model>/<setting>/seed-<k> (<split>)``)."""
    from vitalfm.evaluation.scoring import score_run

    ranges = settings_for(settings, "score", ["minmax_ranges"])["minmax_ranges"]
    # the library reads the ranges where the config keeps them; a vital without one stays
    # missing, so that scoring names it
    present = {vital: r for vital, r in ranges.items() if r is not None}
    with phase("compute"):  # reading the two small inputs and writing the sums included
        score_run(
            {"evaluation": {"minmax_ranges": present}},
            replicate,
            forecasts_path,
            windows_path,
            out_path,
        )


def metrics(
    settings: Settings,
    scored: Sequence[Sequence[Any]],
    score_paths: Sequence[str | Path],
    outputs: Mapping[str, str | Path],
) -> None:
    """Rule metrics: every replicate's scores (``score_paths``, keyed in the same order by
    ``scored``: (split, run id, seed)) -> metrics, paired differences, per-seed values and the
    share of the oracle gap closed."""
    from vitalfm.evaluation.summary import write_metrics

    cfg = settings_for(settings, "metrics", ["database", "models", "methods", "evaluation"])
    write_metrics(
        cfg,
        {tuple(key): path for key, path in zip(scored, score_paths, strict=True)},
        dict(outputs),
    )
