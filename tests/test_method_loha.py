"""LoHa (vitalfm.methods.kinds.loha) on a tiny T5: what trains, how much, save and load."""

from __future__ import annotations

from pathlib import Path

import pytest
from method_testing import N_ATTN, TARGETS, check_trains_saves_and_loads, tiny_t5

from vitalfm.methods import MethodSpec, expand_method
from vitalfm.methods.adapting import adapt, parameter_counts

pytest.importorskip("peft")


@pytest.mark.parametrize("rank", [2, 8])
def test_two_low_rank_pairs_per_layer(rank: int) -> None:
    """(W1a W1b) ⊙ (W2a W2b): 2 x rank x (in + out) per 32 x 32 attention projection."""
    spec = MethodSpec.from_config(f"loha-r{rank}", {"kind": "loha", "rank": rank})
    assert parameter_counts(adapt(tiny_t5(), spec, TARGETS))[0] == N_ATTN * 2 * rank * (32 + 32)


def test_trains_saves_and_loads(tmp_path: Path) -> None:
    spec = MethodSpec.from_config("loha-r2", {"kind": "loha", "rank": 2})
    check_trains_saves_and_loads(spec, tmp_path / "loha")


def test_config_entry_and_sweep() -> None:
    settings = expand_method("loha", {"kind": "loha", "rank": [2, 4]})
    assert list(settings) == ["loha-r2", "loha-r4"]
    assert settings["loha-r4"] == {
        "kind": "loha",
        "rank": 4,
        "alpha": 8.0,
        "scope": "attention",
        "method": "loha",
    }
    assert list(expand_method("loha", {"kind": "loha"})) == ["loha-r8"]  # peft's default rank
