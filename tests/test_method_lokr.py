"""LoKr (vitalfm.methods.kinds.lokr) on a tiny T5: what trains, how much, save and load."""

from __future__ import annotations

from pathlib import Path

import pytest
from method_testing import N_ATTN, TARGETS, check_trains_saves_and_loads, tiny_t5

from vitalfm.methods import MethodSpec, expand_method
from vitalfm.methods.adapting import adapt, parameter_counts

pytest.importorskip("peft")


@pytest.mark.parametrize(("rank", "per_layer"), [(2, 4 * 4 + 2 * 2 * 8), (8, 4 * 4 + 8 * 8)])
def test_kronecker_factors_per_layer(rank: int, per_layer: int) -> None:
    """A 32 x 32 projection factors as (4 x 4) ⊗ (8 x 8): W1 is a full 4 x 4 matrix; W2 is
    low-rank (8 x r + r x 8) when r < 8 / 2, else a full 8 x 8 matrix."""
    spec = MethodSpec.from_config(f"lokr-r{rank}", {"kind": "lokr", "rank": rank})
    assert parameter_counts(adapt(tiny_t5(), spec, TARGETS))[0] == N_ATTN * per_layer


def test_trains_saves_and_loads(tmp_path: Path) -> None:
    spec = MethodSpec.from_config("lokr-r2", {"kind": "lokr", "rank": 2})
    check_trains_saves_and_loads(spec, tmp_path / "lokr")


def test_config_entry_and_sweep() -> None:
    settings = expand_method("lokr", {"kind": "lokr", "rank": [2, 4], "alpha": 4})
    assert list(settings) == ["lokr-r2", "lokr-r4"]
    assert settings["lokr-r2"]["alpha"] == 4.0
