"""Steps of ``workflow/rules/preprocess.smk``: from raw measurements to model inputs (a regular
grid, patient splits, forecasting windows)."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow.parquet as pq

from vitalfm.data.vitals import vital_names_from_config
from vitalfm.steps import Settings, settings_for, write_tsv

log = logging.getLogger(__name__)


def _vitals(names: list[str]) -> list[str]:
    """The settings' vital names in the canonical order files use."""
    return vital_names_from_config({"names": names})


def grid(
    settings: Settings,
    vitals_path: str | Path,
    cohort_path: str | Path,
    out_grid: str | Path,
    out_summary: str | Path,
) -> None:
    """Rule grid: resample each ICU stay's vitals to a regular grid (bin means, observed
    masks)."""
    from vitalfm.data.grid import resample_stays, write_grid

    cfg = settings_for(settings, "grid", ["grid", "vitals"])
    result = resample_stays(
        pq.read_table(vitals_path),
        pq.read_table(cohort_path),
        vital_names=_vitals(cfg["vitals"]),
        frequency_minutes=cfg["grid"]["frequency_minutes"],
    )
    log.info("grid: %s", result.report())
    write_tsv(result.summary, out_summary)
    write_grid(result.table, out_grid)


def split(
    settings: Settings, cohort_path: str | Path, out_manifest: str | Path, out_summary: str | Path
) -> None:
    """Rule split: assign every patient of the cohort to train, validation or test.

    The cohort's patients, not the grid's: a patient none of whose readings is usable would
    leave the grid and redraw every other patient's split, so no reading decides a split.
    """
    from vitalfm.data.splits import split_manifest, split_summary, write_manifest

    cfg = settings_for(settings, "split", ["split"])
    stays = pq.read_table(cohort_path, columns=["subject_id", "icustay_id"]).to_pandas()
    manifest = split_manifest(stays.drop_duplicates(), **cfg["split"])
    summary = split_summary(manifest).reset_index()
    log.info("splits:\n%s", summary.to_string(index=False))
    write_tsv(summary, out_summary)
    write_manifest(manifest, out_manifest)


def windows(
    settings: Settings,
    split_name: str,
    grid_path: str | Path,
    manifest_path: str | Path,
    out_arrays: str | Path,
    out_index: str | Path,
) -> None:
    """Rule windows: index the forecasting windows of one split (``split_name``)."""
    from vitalfm.data.grid import read_grid
    from vitalfm.data.splits import read_manifest
    from vitalfm.data.windows import build_windows

    cfg = settings_for(settings, "windows", ["grid", "windows", "vitals"])
    names = _vitals(cfg["vitals"])
    window_cfg = cfg["windows"]
    built = build_windows(
        read_grid(grid_path, names),
        read_manifest(manifest_path),
        split=split_name,
        vital_names=names,
        frequency_minutes=cfg["grid"]["frequency_minutes"],
        context_hours=window_cfg["context_hours"],
        horizon_hours=window_cfg["horizon_hours"],
        stride_hours=window_cfg["stride_hours"],
        min_horizon_observed=window_cfg["min_horizon_observed"],
        fill=window_cfg["fill"],
    )
    log.info("%s: %d windows from %d ICU stays", split_name, len(built), len(built.stay_ids))
    built.save(out_arrays, out_index)
