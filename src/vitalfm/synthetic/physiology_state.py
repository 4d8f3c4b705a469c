"""The latent physiology's state space: the 5-minute grid, the order of the simulated signals and
of a step's innovations, per-step rates, and the array containers the transition moves along it.

:class:`Params` are a stay's constants, :class:`State` everything its future depends on at one
grid point, :class:`Observation` the clean signals of a state and :class:`Trajectory` a run of
them; the dynamics that connect them are :mod:`vitalfm.synthetic.physiology`'s.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

STEP_MIN = 5
# order of the simulated signals (last axis of values)
HR, SBP, DBP, RR, SPO2, TEMP = range(6)
N_SIGNALS = 6
# In the additive latent space the SPO2 channel holds log(arterial PO2 / mmHg).
OXY = SPO2

N_NORMALS = 2 * N_SIGNALS  # fast noise, slow drift
N_UNIFORMS = 5  # episode, severity, hypotension, fever, hypoxaemia
U_EPISODE, U_SEVERITY, U_HYPOTENSION, U_FEVER, U_HYPOXAEMIA = range(N_UNIFORMS)


def relax(tau_min: float) -> float:
    """Fraction of the way to its target a first-order compartment moves in one step."""
    return float(1.0 - np.exp(-STEP_MIN / tau_min))


def hazard(mean_min: float) -> float:
    """Per-step probability of an exponential waiting time with this mean."""
    return relax(mean_min)


T = TypeVar("T", bound="_Arrays")


@dataclass
class _Arrays:
    """Dataclass of arrays sharing leading batch axes; helpers map over all fields."""

    def map(self: T, fn: Callable[[np.ndarray], np.ndarray]) -> T:
        return type(self)(**{f.name: fn(getattr(self, f.name)) for f in dataclasses.fields(self)})

    def take(self: T, index: Any) -> T:
        """Select along the first axis (an index array repeats or reorders stays)."""
        return self.map(lambda a: a[index])

    @classmethod
    def stack(cls: type[T], items: list[T]) -> T:
        """A new leading axis (e.g. time) over a list of same-shaped instances."""
        return cls(
            **{
                f.name: np.stack([getattr(i, f.name) for i in items])
                for f in dataclasses.fields(cls)
            }
        )

    @classmethod
    def concat(cls: type[T], items: list[T]) -> T:
        return cls(
            **{
                f.name: np.concatenate([getattr(i, f.name) for i in items])
                for f in dataclasses.fields(cls)
            }
        )


@dataclass
class Params(_Arrays):
    """Per-stay constants, drawn at admission. Leading axis: stays (or sample paths)."""

    baseline: np.ndarray  # (B, 6), OXY as log PaO2
    peak_h: np.ndarray  # circadian peak, hours after midnight
    tod0_min: np.ndarray  # clock time of grid point 0, minutes after midnight
    septic: np.ndarray  # bool: deterioration episodes possible
    fluid_gain: np.ndarray  # MAP mmHg of one fluid bolus at full effect


@dataclass
class State(_Arrays):
    """Everything the future of a stay depends on, at one grid point (leading axis: stays)."""

    k: np.ndarray  # grid point index (int64): minutes since grid start / STEP_MIN
    noise: np.ndarray  # (B, 6) fast OU
    drift: np.ndarray  # (B, 6) slow OU
    ep_phase: np.ndarray  # int8: 0 none, 1 rise, 2 plateau, 3 recovery
    ep_time: np.ndarray  # minutes in the phase (phase 0: since the last episode ended)
    ep_severity: np.ndarray
    ep_level: np.ndarray  # deterioration level in [0, severity]
    ep_rate: np.ndarray  # logistic rate per hour (rise/plateau, then recovery)
    hypo_wait: np.ndarray  # minutes of untreated hypotension, -1 if none pending
    fluid_dose: np.ndarray  # boluses still acting (decaying)
    fluid_effect: np.ndarray  # effect compartment, in boluses
    fluid_recent: np.ndarray  # boluses given lately (decaying count)
    pressor_target: np.ndarray  # titrated vasopressor effect, MAP mmHg
    pressor: np.ndarray  # current vasopressor effect, MAP mmHg
    fever_wait: np.ndarray  # minutes of untreated fever, -1 if none pending
    apy_dose: np.ndarray  # paracetamol doses still acting
    apy_effect: np.ndarray  # effect compartment, in doses
    since_apy: np.ndarray  # minutes since the last dose
    hypox_wait: np.ndarray  # minutes of untreated hypoxaemia, -1 if none pending
    o2_set: np.ndarray  # extra inspired oxygen, log PaO2
    o2_effect: np.ndarray


@dataclass
class Observation(_Arrays):
    """Clean latent signals at one grid point: ``values`` HR, SBP, DBP, RR, SpO2 (%), temp."""

    values: np.ndarray  # (B, 6)
    mbp: np.ndarray
    level: np.ndarray  # deterioration level (the state's, copied for convenience)
    alert: np.ndarray  # bool: charting is denser now


@dataclass
class Trajectory:
    """Grid points 0..T of a group of stays: ``states``/``obs`` fields have a leading time axis."""

    params: Params
    states: State
    obs: Observation

    def state_at(self, k: int | np.ndarray, stays: Any = slice(None)) -> State:
        return self.states.map(lambda a: a[k, stays])
