"""The latent physiology of a batch's ICU stays, and the truth records kept of it.

Stays of similar length are simulated together, group by group, each group from its own random
stream (:func:`simulate_latent`), so that a group can be regenerated alone: the oracle
regenerates only the stays it needs, and the charting draws never shift the physiology.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from vitalfm.synthetic import physiology as phys
from vitalfm.synthetic.physiology_state import STEP_MIN, Params, State, Trajectory

# Stays of similar length are simulated together, one 5-minute step at a time for the whole
# group: few large groups keep the per-step overhead low, the bound keeps memory flat.
MAX_GROUP_POINTS = 250_000  # stays x 5-min grid points simulated at once
MAX_GROUP_STAYS = 256


@dataclass
class StayTruth:
    """The clean latent signals behind one stay's chartevents, and the Markov state behind them.

    Grid point k is at ``grid_start + k * step_min`` seconds/minutes (``grid_start`` is the
    stay's first whole minute, in epoch seconds); a chart row at minute ``m`` of the stay (its
    charttime is ``grid_start + 60 m``) reads grid point ``m // step_min``. ``values`` rows are
    HR, SBP, DBP, RR, SpO2 (%), temperature (degC); ``profile`` is the deterioration level;
    ``alert`` marks denser charting. ``params``/``states`` are the stay's
    :class:`~vitalfm.synthetic.physiology_state.Params` (leading axis 1) and state at every
    grid point (leading axis time): ``physiology.simulate`` from ``state_at(k)`` continues the
    stay. The remaining fields are the charting facts the measurement model needs.
    """

    icustay_id: int
    grid_start: int  # seconds since the epoch
    step_min: int
    values: np.ndarray
    mbp: np.ndarray
    profile: np.ndarray
    septic: bool
    alert: np.ndarray
    params: Params
    states: State
    metavision: bool
    arterial_line: bool
    second_arterial_line: bool
    ventilated: bool
    fahrenheit_p: float

    def state_at(self, k: int) -> State:
        """The state at grid point ``k`` (leading axis 1, ready for ``physiology.simulate``)."""
        return self.states.map(lambda a: a[k : k + 1])


def stay_minutes(stays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each stay's first whole minute (epoch minutes: the latent grid starts there) and its
    length in minutes after it."""
    base_min = -(-stays["intime"] // 60)
    return base_min, stays["outtime"] // 60 - base_min


def length_groups(length: np.ndarray) -> list[np.ndarray]:
    """Stays of similar length together (little padding), groups bounded in stays x points."""
    n = length.size
    by_length = np.argsort(length, kind="stable")
    groups, start = [], 0
    while start < n:
        stop = start + 1
        while stop < n and stop - start < MAX_GROUP_STAYS:
            if (stop - start + 1) * (int(length[by_length[stop]]) // STEP_MIN + 1) > (
                MAX_GROUP_POINTS
            ):
                break
            stop += 1
        groups.append(by_length[start:stop])
        start = stop
    return groups


@dataclass
class BatchLatent:
    """The latent trajectories of one batch's stays, group by group (None: not simulated)."""

    base_min: np.ndarray
    length: np.ndarray
    groups: list[np.ndarray]
    trajectories: list[Trajectory | None]


def simulate_latent(
    seed: int,
    batch: int,
    stays: Mapping[str, np.ndarray],
    *,
    keep_states: bool,
    wanted: np.ndarray | None = None,
) -> BatchLatent:
    """Simulate each group from its own random stream, seeded by (seed, batch, group), so that
    a group can be simulated alone (the oracle regenerates only the stays it needs) and the
    charting draws never shift the physiology."""
    base_min, length = stay_minutes(stays)
    groups = length_groups(length)
    trajectories: list[Trajectory | None] = []
    for g, idx in enumerate(groups):
        if wanted is not None and not wanted[idx].any():
            trajectories.append(None)
            continue
        params, start, z, u = group_draws(seed, batch, g, stays, idx, base_min, length)
        trajectories.append(phys.simulate(params, start, z, u, keep_states=keep_states))
    return BatchLatent(base_min, length, groups, trajectories)


def group_draws(
    seed: int,
    batch: int,
    group: int,
    stays: Mapping[str, np.ndarray],
    idx: np.ndarray,
    base_min: np.ndarray,
    length: np.ndarray,
) -> tuple[Params, State, np.ndarray, np.ndarray]:
    """Everything random about group ``group`` of batch ``batch`` (its stays ``idx``): the
    parameters, initial state and innovations, from the group's own stream."""
    rng = np.random.default_rng([seed, 2, batch, group])
    n_points = int(length[idx].max()) // STEP_MIN + 1
    tod = (base_min[idx] % 1440).astype(np.float64)
    return phys.draw_group(rng, stays["baseline"][idx], n_points, tod, stays["septic"][idx])


def stay_truths(
    stays: Mapping[str, np.ndarray], lat: BatchLatent, wanted: np.ndarray | None = None
) -> list[StayTruth]:
    """The :class:`StayTruth` of the simulated (and ``wanted``) stays, by icustay_id."""
    truth: list[StayTruth] = []
    for idx, tr in zip(lat.groups, lat.trajectories, strict=True):
        if tr is None:
            continue
        for i, stay in enumerate(idx):
            if wanted is not None and not wanted[stay]:
                continue
            k = int(lat.length[stay]) // STEP_MIN + 1
            truth.append(
                StayTruth(
                    icustay_id=int(stays["icustay_id"][stay]),
                    grid_start=int(lat.base_min[stay] * 60),
                    step_min=STEP_MIN,
                    values=tr.obs.values[:k, i, :].T.copy(),
                    mbp=tr.obs.mbp[:k, i].copy(),
                    profile=tr.obs.level[:k, i].copy(),
                    septic=bool(stays["septic"][stay]),
                    alert=tr.obs.alert[:k, i].copy(),
                    params=tr.params.take(np.array([i])),
                    states=tr.states.map(lambda a, i=i, k=k: a[:k, i].copy()),
                    metavision=bool(stays["metavision"][stay]),
                    arterial_line=bool(stays["art"][stay]),
                    second_arterial_line=bool(stays["art2"][stay]),
                    ventilated=bool(stays["vent"][stay]),
                    fahrenheit_p=float(stays["temp_f_p"][stay]),
                )
            )
    truth.sort(key=lambda t: t.icustay_id)
    return truth
