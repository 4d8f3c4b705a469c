"""Patient-level split: deterministic, disjoint, sized as asked, with a readable error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from vitalfm.data.splits import (
    MANIFEST_SCHEMA,
    read_manifest,
    split_manifest,
    split_subjects,
    split_summary,
    write_manifest,
)
from vitalfm.errors import ConfigError, DataError

FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}


def test_same_seed_gives_the_same_split_whatever_the_input_order() -> None:
    ids = np.arange(100, 300)
    first = split_subjects(ids, **FRACTIONS, seed=7)
    second = split_subjects(ids[::-1].copy(), **FRACTIONS, seed=7)
    pd.testing.assert_frame_equal(first, second)


def test_another_seed_gives_another_split() -> None:
    ids = np.arange(200)
    first = split_subjects(ids, **FRACTIONS, seed=1)
    second = split_subjects(ids, **FRACTIONS, seed=2)
    assert (first["split"] != second["split"]).any()
    # Sizes depend on the fractions only.
    assert first["split"].value_counts().to_dict() == second["split"].value_counts().to_dict()


def test_each_subject_in_exactly_one_split() -> None:
    ids = np.repeat(np.arange(50), 3)  # repeated ids (several stays per patient)
    split = split_subjects(ids, **FRACTIONS, seed=0)
    assert split["subject_id"].tolist() == list(range(50))
    assert split["subject_id"].is_unique
    groups = [set(split.loc[split["split"] == s, "subject_id"]) for s in FRACTIONS]
    assert sum(len(g) for g in groups) == 50
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    assert split["subject_id"].dtype == np.int32


def test_fractions_respected_on_1000_subjects() -> None:
    split = split_subjects(np.arange(1000), train=0.6, validation=0.25, test=0.15, seed=3)
    counts = split["split"].value_counts()
    assert (counts["train"], counts["validation"], counts["test"]) == (600, 250, 150)


def test_sizes_are_the_rounded_fractions() -> None:
    # 20 * (0.72, 0.14, 0.14) = (14.4, 2.8, 2.8): rounded (14, 3, 3), which adds up to 20.
    split = split_subjects(np.arange(20), train=0.72, validation=0.14, test=0.14, seed=0)
    counts = split["split"].value_counts()
    assert (counts["train"], counts["validation"], counts["test"]) == (14, 3, 3)


def test_rounding_keeps_every_split_non_empty() -> None:
    split = split_subjects([5, 6, 7], **FRACTIONS, seed=0)
    assert sorted(split["split"]) == ["test", "train", "validation"]
    counts = split_subjects(np.arange(11), **FRACTIONS, seed=0)["split"].value_counts()
    assert counts.sum() == 11
    assert counts.min() >= 1


def test_fewer_than_three_subjects_is_an_error() -> None:
    with pytest.raises(DataError, match="only 2 patient") as err:
        split_subjects([1, 2, 2, 1], **FRACTIONS, seed=0)
    assert "cohort size" in err.value.fix


def test_fractions_must_add_up_to_one() -> None:
    with pytest.raises(ConfigError, match="not 1"):
        split_subjects(np.arange(10), train=0.7, validation=0.2, test=0.2, seed=0)


def stays_table() -> pd.DataFrame:
    # subject 1: 3 stays; 2: 1; 3: 2; 4..10: 1 each
    subjects = [1, 1, 1, 2, 3, 3, *range(4, 11)]
    return pd.DataFrame({"subject_id": subjects, "icustay_id": range(100, 100 + len(subjects))})


def test_manifest_counts_stays_per_subject() -> None:
    manifest = split_manifest(stays_table(), **FRACTIONS, seed=4)
    assert manifest["subject_id"].tolist() == list(range(1, 11))
    n = dict(zip(manifest["subject_id"], manifest["n_icustays"], strict=True))
    assert (n[1], n[2], n[3], n[7]) == (3, 1, 2, 1)
    # The same subjects get the same split as from split_subjects directly.
    direct = split_subjects(range(1, 11), **FRACTIONS, seed=4)
    assert manifest["split"].tolist() == direct["split"].tolist()


def test_manifest_from_grid_rows_counts_distinct_stays() -> None:
    grid_rows = stays_table().loc[lambda f: f.index.repeat(5)]  # five grid rows per stay
    manifest = split_manifest(grid_rows, **FRACTIONS, seed=4)
    assert manifest["n_icustays"].sum() == 13


def test_summary_counts_subjects_and_stays() -> None:
    manifest = split_manifest(stays_table(), **FRACTIONS, seed=4)
    summary = split_summary(manifest)
    assert summary.index.tolist() == ["train", "validation", "test"]
    assert summary["n_subjects"].sum() == 10
    assert summary["n_icustays"].sum() == 13
    train = manifest[manifest["split"] == "train"]
    assert summary.loc["train", "n_icustays"] == train["n_icustays"].sum()
    assert summary["fraction_subjects"].sum() == pytest.approx(1.0)


def test_manifest_round_trip(tmp_path: Path) -> None:
    manifest = split_manifest(stays_table(), **FRACTIONS, seed=4)
    path = tmp_path / "splits.parquet"
    write_manifest(manifest, path)
    assert pq.read_schema(path).equals(MANIFEST_SCHEMA)
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, manifest, check_dtype=False)
    assert back["n_icustays"].dtype == np.int32
    with pytest.raises(DataError, match="does not exist"):
        read_manifest(tmp_path / "nope.parquet")
