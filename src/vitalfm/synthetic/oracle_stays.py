"""The truth the oracle keeps of its stays: every grid point's latent state, flat along time, and
the charting facts of each stay, sorted by icustay_id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vitalfm.synthetic.physiology_state import Params, State


@dataclass
class OracleStays:
    """Truth of the oracle's stays, sorted by icustay_id; trajectories concatenated along time
    (flat index), each stay's starting at ``offset``."""

    ids: np.ndarray  # sorted icustay_ids
    base_min: np.ndarray
    n_points: np.ndarray
    offset: np.ndarray  # first flat index of each stay's trajectory
    params: Params
    states: State  # flat: (sum of n_points, ...)
    metavision: np.ndarray
    art: np.ndarray
    art2: np.ndarray
    vent: np.ndarray
    fahrenheit_p: np.ndarray

    @classmethod
    def of(cls, truths: Sequence[Any]) -> OracleStays:
        """From :class:`~vitalfm.synthetic.latent_stays.StayTruth` records, in any order."""
        truths = sorted(truths, key=lambda t: t.icustay_id)
        n_points = np.array([t.states.k.shape[0] for t in truths], dtype=np.int64)
        return cls(
            ids=np.array([t.icustay_id for t in truths], dtype=np.int64),
            base_min=np.array([t.grid_start // 60 for t in truths], dtype=np.int64),
            n_points=n_points,
            offset=np.concatenate([[0], np.cumsum(n_points)[:-1]]).astype(np.int64),
            params=Params.concat([t.params for t in truths]),
            states=State.concat([t.states for t in truths]),
            metavision=np.array([t.metavision for t in truths]),
            art=np.array([t.arterial_line for t in truths]),
            art2=np.array([t.second_arterial_line for t in truths]),
            vent=np.array([t.ventilated for t in truths]),
            fahrenheit_p=np.array([t.fahrenheit_p for t in truths]),
        )

    def merged(self, other: OracleStays) -> OracleStays:
        """Both sets of stays, sorted by icustay_id: the trajectories are appended as they
        are and the per-stay arrays (offsets shifted) reordered."""
        order = np.argsort(np.concatenate([self.ids, other.ids]), kind="stable")

        def per_stay(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
            return np.concatenate([mine, theirs])[order]

        return OracleStays(
            ids=per_stay(self.ids, other.ids),
            base_min=per_stay(self.base_min, other.base_min),
            n_points=per_stay(self.n_points, other.n_points),
            offset=per_stay(self.offset, other.offset + int(self.n_points.sum())),
            params=Params.concat([self.params, other.params]).take(order),
            states=State.concat([self.states, other.states]),
            metavision=per_stay(self.metavision, other.metavision),
            art=per_stay(self.art, other.art),
            art2=per_stay(self.art2, other.art2),
            vent=per_stay(self.vent, other.vent),
            fahrenheit_p=per_stay(self.fahrenheit_p, other.fahrenheit_p),
        )
