"""Deterministic synthetic MIMIC-III generator, in batches of patients: the orchestration.

Every batch of :data:`BATCH_PATIENTS` patients draws from its own generator, seeded from
``(seed, batch index)``, and ids/row_ids run on across batches, so the output depends only on
the ``synthetic`` config, never on the sink or on memory. A batch holds all rows of its patients
(administrative tables and chartevents) as pyarrow tables; nothing else is kept between
batches, so memory stays flat however many patients are generated.

Conventions of MIMIC-III v1.4 reproduced (its documentation on mimic.mit.edu): dates shifted into
2100-2200 per patient; patients older than 89 have ``dob`` exactly 300 years before their first
admission; ICD-9 codes without dots; per patient one charting system, CareVue (low itemids,
``warning`` and ``error`` NULL, ``resultstatus``/``stopped`` set, temperatures in
'Deg. F'/'Deg. C' with 677/679 "calc" duplicates) or MetaVision (itemids > 220000,
``warning``/``error`` 0/1, temperatures in '?F'/'?C'); charting every 15-60 min at irregular
minutes with multi-hour gaps, duplicates, typos out of range, text-only rows and ``error = 1``
entries.

The vital signs are readings of a latent Markov physiology (:mod:`vitalfm.synthetic.physiology`,
simulated per group of stays from its own random stream) through the measurement and charting
model (noise, rounding, arterial vs cuff pressure, degF/degC, denser charting while a patient
is unstable). :mod:`vitalfm.synthetic.oracle` reuses both, so the oracle forecaster predicts
exactly what is generated. Version 2.0: the Markov physiology (1.x drew episode times at
admission).

Where each part lives, in the order a batch is generated:

* :mod:`~vitalfm.synthetic.static_tables`: d_items, d_icd_* and caregivers (batch 0 only);
* :mod:`~vitalfm.synthetic.admin_tables`: patients, admissions, icustays, diagnoses,
  procedures, services, and the per-stay facts charting needs;
* :mod:`~vitalfm.synthetic.latent_stays`: the latent physiology of the stays, group by group,
  and the :class:`~vitalfm.synthetic.latent_stays.StayTruth` records;
* :mod:`~vitalfm.synthetic.chart_schedule` (when readings are charted),
  :mod:`~vitalfm.synthetic.measurement` (what a reading is) and
  :mod:`~vitalfm.synthetic.chart_items` (itemids, units, texts): the vocabulary of
  :mod:`~vitalfm.synthetic.chart_rows`, which builds chartevents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vitalfm.config import validate_config
from vitalfm.errors import DataError
from vitalfm.synthetic.admin_tables import IdCounters, draw_cohort
from vitalfm.synthetic.chart_rows import chartevents
from vitalfm.synthetic.latent_stays import (
    StayTruth,
    group_draws,
    length_groups,
    simulate_latent,
    stay_minutes,
    stay_truths,
)
from vitalfm.synthetic.physiology_state import STEP_MIN
from vitalfm.synthetic.static_tables import caregiver_ids, static_tables

GENERATOR_VERSION = "2.0"
BATCH_PATIENTS = 100


def synthetic_settings(cfg_synthetic: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``synthetic`` config section, validated, with defaults filled in."""
    return validate_config({"synthetic": dict(cfg_synthetic or {})})["synthetic"]


@dataclass
class Batch:
    """All rows of one batch of patients, table by table, and (on request) their stays' truth."""

    index: int
    tables: dict[str, pa.Table]
    truth: list[StayTruth] = field(default_factory=list)


def n_batches(settings: Mapping[str, Any]) -> int:
    """How many batches the config's patients fill (the last one may be partial)."""
    return -(-int(settings["n_patients"]) // BATCH_PATIENTS)


def iter_batches(
    cfg_synthetic: Mapping[str, Any] | None, *, with_truth: bool = False
) -> Iterator[Batch]:
    """All rows of the synthetic database, batch by batch.

    Batch 0 starts with the static tables (d_items, d_icd_diagnoses, d_icd_procedures,
    caregivers). ``with_truth`` attaches each stay's latent signals and states (tests, plots,
    the oracle).
    """
    settings = synthetic_settings(cfg_synthetic)
    seed, n_total = int(settings["seed"]), int(settings["n_patients"])
    counters = IdCounters()
    cgid_pool = caregiver_ids(seed)
    for b in range(n_batches(settings)):
        rng = np.random.default_rng([seed, 1, b])
        first = b * BATCH_PATIENTS
        n = min(BATCH_PATIENTS, n_total - first)
        cohort = draw_cohort(rng, settings, first + 1, n, counters)
        lat = simulate_latent(seed, b, cohort.stays, keep_states=with_truth)
        charts = chartevents(rng, cohort.stays, lat, cgid_pool, counters)
        tables = dict(static_tables(settings)) if b == 0 else {}
        tables.update(cohort.tables)
        tables["chartevents"] = charts
        truth = stay_truths(cohort.stays, lat) if with_truth else []
        yield Batch(index=b, tables=tables, truth=truth)


def iter_truth(
    cfg_synthetic: Mapping[str, Any] | None, icustay_ids: Iterable[int] | None = None
) -> Iterator[StayTruth]:
    """The :class:`StayTruth` of the given ICU stays (all if None), in icustay_id order within
    each batch, without generating chartevents: the same truth ``iter_batches(...,
    with_truth=True)`` attaches, at a fraction of the cost (groups without a wanted stay are
    not simulated)."""
    settings = synthetic_settings(cfg_synthetic)
    seed, n_total = int(settings["seed"]), int(settings["n_patients"])
    ids = None if icustay_ids is None else np.unique(np.asarray(list(icustay_ids), np.int64))
    counters = IdCounters()
    for b in range(n_batches(settings)):
        rng = np.random.default_rng([seed, 1, b])
        first = b * BATCH_PATIENTS
        n = min(BATCH_PATIENTS, n_total - first)
        cohort = draw_cohort(rng, settings, first + 1, n, counters)
        stay_ids = cohort.stays["icustay_id"]
        wanted = None if ids is None else np.isin(stay_ids, ids)
        if wanted is not None and not wanted.any():
            continue
        lat = simulate_latent(seed, b, cohort.stays, keep_states=True, wanted=wanted)
        yield from stay_truths(cohort.stays, lat, wanted)


def stay_innovations(
    cfg_synthetic: Mapping[str, Any] | None, icustay_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """The innovations the generator drew for one stay's transitions: normals (T - 1,
    N_NORMALS) and uniforms (T - 1, N_UNIFORMS), T its grid points. With them,
    ``physiology.simulate`` from ``StayTruth.state_at(k)`` replays the stay exactly
    (``z[k:]``, ``u[k:]``)."""
    settings = synthetic_settings(cfg_synthetic)
    seed = int(settings["seed"])
    counters = IdCounters()
    for b in range(n_batches(settings)):
        rng = np.random.default_rng([seed, 1, b])
        first = b * BATCH_PATIENTS
        n = min(BATCH_PATIENTS, int(settings["n_patients"]) - first)
        stays = draw_cohort(rng, settings, first + 1, n, counters).stays
        hit = np.flatnonzero(stays["icustay_id"] == icustay_id)
        if hit.size == 0:
            continue
        base_min, length = stay_minutes(stays)
        for g, idx in enumerate(length_groups(length)):
            i = np.flatnonzero(idx == hit[0])
            if i.size:
                _, _, z, u = group_draws(seed, b, g, stays, idx, base_min, length)
                k = int(length[hit[0]]) // STEP_MIN
                return z[:k, i[0]], u[:k, i[0]]
    raise DataError(
        f"ICU stay {icustay_id} is not in the synthetic database of this config",
        "pass an icustay_id of the database generated from this `synthetic` section",
    )
