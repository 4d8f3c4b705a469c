"""Patient-level train/validation/test split.

The split is a function of ``subject_id`` alone, so all ICU stays of one patient land in the
same split and no patient leaks between training and evaluation.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vitalfm.errors import ConfigError, DataError
from vitalfm.io import write_parquet

SPLITS: tuple[str, ...] = ("train", "validation", "test")
MIN_SUBJECTS = len(SPLITS)
MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("subject_id", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("n_icustays", pa.int32(), nullable=False),
    ]
)


def _split_sizes(n: int, fractions: np.ndarray) -> np.ndarray:
    """Largest-remainder rounding of ``n * fractions``, then at least one subject per split."""
    exact = n * fractions
    sizes = np.floor(exact).astype(np.int64)
    remainder = n - int(sizes.sum())
    # Ties go to the earlier split (stable sort) so the result is deterministic.
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[:remainder]] += 1
    for i in range(sizes.size):
        if sizes[i] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[i] = 1
    return sizes


def _check_fractions(train: float, validation: float, test: float) -> np.ndarray:
    fractions = np.array([train, validation, test], dtype=np.float64)
    for name, value in zip(SPLITS, fractions, strict=True):
        if not (0 < value < 1):
            raise ConfigError(
                f"config key split.{name} = {value!r} is invalid",
                "set it to a fraction strictly between 0 and 1",
            )
    if not math.isclose(fractions.sum(), 1.0, abs_tol=1e-6):
        raise ConfigError(
            f"config keys split.train + split.validation + split.test = {fractions.sum():g}, not 1",
            "make the three split fractions add up to 1 (e.g. 0.7, 0.15, 0.15)",
        )
    return fractions


def split_subjects(
    subject_ids: Iterable[int] | np.ndarray | pd.Series,
    *,
    train: float,
    validation: float,
    test: float,
    seed: int,
) -> pd.DataFrame:
    """Assign each distinct subject to one split.

    The sorted distinct ids are permuted with ``numpy.random.default_rng(seed)``; the first
    ``round(n * train)`` go to train, the next to validation, the rest to test (largest-remainder
    rounding, every split non-empty). Returns columns subject_id (int32) and split, sorted by
    subject_id.
    """
    fractions = _check_fractions(train, validation, test)
    ids = np.unique(np.asarray(pd.Series(subject_ids).dropna(), dtype=np.int64))
    if ids.size < MIN_SUBJECTS:
        raise DataError(
            f"only {ids.size} patient(s) in the cohort; a train/validation/test split needs "
            f"at least {MIN_SUBJECTS}",
            "increase the cohort size (more patients, e.g. config key synthetic.n_patients, "
            "or a wider cohort definition)",
        )
    permuted = np.random.default_rng(seed).permutation(ids)
    sizes = _split_sizes(ids.size, fractions)
    labels = np.repeat(np.array(SPLITS, dtype=object), sizes)
    frame = pd.DataFrame({"subject_id": permuted.astype(np.int32), "split": labels})
    return frame.sort_values("subject_id", ignore_index=True)


def _subject_stays(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    names = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    missing = [c for c in ("subject_id", "icustay_id") if c not in names]
    if missing:
        raise DataError(
            f"the table to split lacks column(s) {missing!r}",
            "pass the cohort or grid table (both have subject_id and icustay_id)",
        )
    if isinstance(table, pa.Table):
        frame = table.select(["subject_id", "icustay_id"]).to_pandas()
    else:
        frame = table.loc[:, ["subject_id", "icustay_id"]]
    return frame.dropna().drop_duplicates()


def split_manifest(
    table: pa.Table | pd.DataFrame,
    *,
    train: float,
    validation: float,
    test: float,
    seed: int,
) -> pd.DataFrame:
    """Split the subjects of a cohort or grid table; add each subject's ICU stay count.

    Columns: subject_id int32, split, n_icustays int32; one row per subject.
    """
    stays = _subject_stays(table)
    per_subject = stays.groupby("subject_id").size().rename("n_icustays")
    manifest = split_subjects(
        per_subject.index.to_numpy(), train=train, validation=validation, test=test, seed=seed
    )
    manifest["n_icustays"] = (
        per_subject.reindex(manifest["subject_id"].astype(np.int64)).to_numpy().astype(np.int32)
    )
    return manifest


def split_summary(manifest: pd.DataFrame) -> pd.DataFrame:
    """Subjects and ICU stays per split (index: split, in train/validation/test order)."""
    grouped = manifest.groupby("split")
    out = pd.DataFrame(
        {
            "n_subjects": grouped["subject_id"].nunique(),
            "n_icustays": grouped["n_icustays"].sum(),
        }
    ).reindex(list(SPLITS), fill_value=0)
    out["fraction_subjects"] = out["n_subjects"] / max(int(out["n_subjects"].sum()), 1)
    out.index.name = "split"
    return out


def write_manifest(manifest: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Write the split manifest to parquet atomically, with :data:`MANIFEST_SCHEMA`."""
    table = pa.Table.from_pandas(
        manifest.loc[:, MANIFEST_SCHEMA.names], schema=MANIFEST_SCHEMA, preserve_index=False
    )
    write_parquet(table, path)


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise DataError(
            f"split manifest {path} does not exist", "run the splits rule first"
        ) from None
    except (OSError, pa.ArrowException) as err:
        raise DataError(
            f"split manifest {path} cannot be read ({err})", "delete it and rerun the splits rule"
        ) from None
    missing = [c for c in MANIFEST_SCHEMA.names if c not in table.column_names]
    if missing:
        raise DataError(
            f"split manifest {path} lacks column(s) {missing!r}", "rerun the splits rule"
        )
    return table.select(MANIFEST_SCHEMA.names).to_pandas()
