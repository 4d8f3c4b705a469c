"""The patient and seed bootstrap weights (vitalfm.evaluation.bootstrap)."""

from __future__ import annotations

import numpy as np
import pytest

from vitalfm.evaluation import bootstrap


def test_patient_weights_resample_patients_reproducibly():
    w = bootstrap.patient_weights(7, 500, seed=4)
    assert w.shape == (500, 7) and (w.sum(axis=1) == 7).all()
    assert np.array_equal(w, bootstrap.patient_weights(7, 500, seed=4))
    assert not np.array_equal(w, bootstrap.patient_weights(7, 500, seed=5))
    # each patient is drawn once per resample on average
    assert w.mean() == pytest.approx(1.0, abs=0.05)
