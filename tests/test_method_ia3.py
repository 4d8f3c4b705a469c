"""IA³ (vitalfm.methods.kinds.ia3) on a tiny T5: what trains, how much, save and load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_testing import D_FF, D_MODEL, N_ATTN, TARGETS, logits, tiny_t5

from vitalfm.errors import ConfigError
from vitalfm.methods import MethodSpec, expand_method
from vitalfm.methods.adapting import adapt, parameter_counts

pytest.importorskip("peft")


def test_one_vector_per_attention_projection() -> None:
    spec = MethodSpec.from_config("ia3", {"kind": "ia3"})
    assert parameter_counts(adapt(tiny_t5(), spec, TARGETS))[0] == N_ATTN * D_MODEL


def test_ffn_layers_are_rescaled_on_their_input() -> None:
    """wi (32 -> 64) and wo (64 -> 32) are feed-forward modules: their vectors scale inputs."""
    spec = MethodSpec.from_config("ia3", {"kind": "ia3", "scope": "attention+ffn"})
    ffn = 2 * (D_MODEL + D_FF)  # encoder and decoder: wi's input (32) and wo's input (64)
    assert parameter_counts(adapt(tiny_t5(), spec, TARGETS))[0] == N_ATTN * D_MODEL + ffn


def test_initialised_to_the_identity() -> None:
    spec = MethodSpec.from_config("ia3", {"kind": "ia3", "scope": "attention+ffn"})
    torch.testing.assert_close(logits(adapt(tiny_t5(), spec, TARGETS)), logits(tiny_t5()))


def test_trains_saves_and_loads(tmp_path: Path) -> None:
    from method_testing import check_trains_saves_and_loads

    spec = MethodSpec.from_config("ia3", {"kind": "ia3", "learning_rate": 1e-3})
    check_trains_saves_and_loads(spec, tmp_path / "ia3")


def test_config_entry() -> None:
    assert expand_method("ia3", {"kind": "ia3"}) == {
        "ia3": {"kind": "ia3", "scope": "attention", "method": "ia3"}
    }
    with pytest.raises(ConfigError, match="kind ia3 does not use rank"):
        MethodSpec.from_config("ia3", {"kind": "ia3", "rank": 2})
