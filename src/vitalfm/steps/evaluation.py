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


def events(
    settings: Settings,
    replicate: str,
    forecasts_path: str | Path,
    windows_path: str | Path,
    out_path: str | Path,
    paths_path: str | Path | None = None,
) -> None:
    """Rule events: one replicate's forecasts of a split -> each (window, event)'s truth,
    onset, context status and forecast probability (:mod:`vitalfm.evaluation.event_windows`).

    ``paths_path`` is the replicate's sample-path file (rule forecast); None, or a file with
    no rows, scores the events from the forecast's quantiles."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vitalfm.data.windows import WindowSet
    from vitalfm.evaluation.event_windows import window_events
    from vitalfm.evaluation.events import parse_events
    from vitalfm.evaluation.scoring import read_forecasts
    from vitalfm.io import write_parquet

    cfg = settings_for(settings, "events", ["events", "event_alarm_probability"])
    found = parse_events({"evaluation": cfg})
    with phase("compute"):
        forecasts = read_forecasts(forecasts_path, replicate)
        # every stored level sharpens the interpolated distribution (read_forecasts reads
        # those the scores use)
        extra = [
            name
            for name in pq.read_schema(forecasts_path).names
            if name.startswith("q") and name not in forecasts.columns
        ]
        if extra:
            more = pq.read_table(forecasts_path, columns=extra).to_pandas()
            forecasts = pd.concat([forecasts, more], axis=1)
        windows = WindowSet.load(windows_path)
        paths = pq.read_table(paths_path) if paths_path is not None else None
        table = window_events(
            forecasts, windows, found, float(cfg["event_alarm_probability"]), paths, replicate
        )
        write_parquet(pa.Table.from_pandas(table, preserve_index=False), out_path)


def event_metrics(
    settings: Settings,
    keys: Sequence[Sequence[Any]],
    event_paths: Sequence[str | Path],
    outputs: Mapping[str, str | Path],
) -> None:
    """Rule event_metrics: every replicate's event table (``event_paths``, keyed in the same
    order by ``keys``: (split, run id, seed)) -> the clinical_events metrics (parquet, CSV)."""
    import pandas as pd
    import pyarrow as pa

    from vitalfm.evaluation.event_metrics import event_tables
    from vitalfm.evaluation.run_summary import REPORT_SPLIT, SELECTION_SPLIT
    from vitalfm.io import write_parquet, write_text
    from vitalfm.models.registry import naive_reference_family
    from vitalfm.study import study_runs

    cfg = settings_for(settings, "event_metrics", ["database", "models", "methods", "evaluation"])
    runs = study_runs(cfg)
    tables = {
        (str(split), str(run), int(seed)): pd.read_parquet(path)
        for (split, run, seed), path in zip(keys, event_paths, strict=True)
    }
    evaluation = cfg["evaluation"]
    with phase("compute"):
        frame = event_tables(
            runs,
            tables,
            int(evaluation["bootstrap"]["resamples"]),
            int(evaluation["bootstrap"]["seed"]),
            float(evaluation["event_alarm_probability"]),
            [s for s in (SELECTION_SPLIT, REPORT_SPLIT) if any(k[0] == s for k in tables)],
            naive_reference_family(),
            min_windows=int(evaluation["event_min_windows"]),
        )
        write_parquet(pa.Table.from_pandas(frame, preserve_index=False), outputs["events"])
        write_text(frame.to_csv(index=False), outputs["events_csv"])
