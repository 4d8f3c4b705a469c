"""The tables that are the same in every batch: the dictionaries (d_items, d_icd_diagnoses,
d_icd_procedures) and the caregivers who chart the rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from vitalfm.synthetic import vocab
from vitalfm.synthetic.tables import make_table


def caregiver_ids(seed: int) -> np.ndarray:
    """The cgids of the database's 400 caregivers (sorted)."""
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(np.arange(14000, 22000), size=400, replace=False))


def static_tables(settings: Mapping[str, Any]) -> dict[str, pa.Table]:
    """Dictionary tables (d_items, d_icd_*) and caregivers: the same for every batch."""
    defs = vocab.ITEM_DEFS
    d_items = make_table(
        "d_items",
        {
            "row_id": np.arange(1, len(defs) + 1),
            "itemid": [d.itemid for d in defs],
            "label": [d.label for d in defs],
            "abbreviation": [d.abbreviation for d in defs],
            "dbsource": [d.dbsource for d in defs],
            "linksto": ["chartevents"] * len(defs),
            "category": [d.category for d in defs],
            "unitname": [d.unitname for d in defs],
            "param_type": [d.param_type for d in defs],
        },
    )

    def icd(name: str, titles: Mapping[str, tuple[str, str]]) -> pa.Table:
        codes = sorted(titles)
        return make_table(
            name,
            {
                "row_id": np.arange(1, len(codes) + 1),
                "icd9_code": codes,
                "short_title": [titles[c][0] for c in codes],
                "long_title": [titles[c][1] for c in codes],
            },
        )

    cgids = caregiver_ids(settings["seed"])
    rng = np.random.default_rng([settings["seed"], 8])
    labels = rng.choice(np.array(vocab.CAREGIVER_LABELS), size=cgids.size)
    return {
        "d_items": d_items,
        "d_icd_diagnoses": icd("d_icd_diagnoses", vocab.DIAGNOSES),
        "d_icd_procedures": icd("d_icd_procedures", vocab.PROCEDURES),
        "caregivers": make_table(
            "caregivers",
            {
                "row_id": np.arange(1, cgids.size + 1),
                "cgid": cgids,
                "label": labels.tolist(),
                "description": labels.tolist(),
            },
        ),
    }
