"""Tiny random T5 models and a short training loop, shared by the method-kind tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn

from vitalfm.models.base import TargetModules

D_MODEL, D_FF, VOCAB = 32, 64, 64
# Norms of the attention sub-layers: encoder self-attention (layer.0), decoder self- and
# cross-attention (layer.0, layer.1); not the FFN norms or the final norms.
ATTN_NORMS = r"(encoder\.block\.\d+\.layer\.0|decoder\.block\.\d+\.layer\.[01])\.layer_norm"
TARGETS = TargetModules(
    attention=("q", "k", "v", "o"),
    ffn=("wi", "wo"),
    norms=(ATTN_NORMS,),
    bias_linears=("q", "k", "v", "o", "wi", "wo"),
)
# The tiny T5 (1 encoder + 1 decoder layer) has 12 attention linears (encoder self, decoder
# self, decoder cross; 32x32 each), 2 wi (32->64), 2 wo (64->32) and 3 attention norms (32).
N_ATTN = 12
T5_TOTAL = (
    VOCAB * D_MODEL  # shared = encoder/decoder embed_tokens = lm_head (tied, counted once)
    + N_ATTN * D_MODEL * D_MODEL
    + 4 * D_MODEL * D_FF
    + 2 * 32 * 4  # relative_attention_bias (32 buckets x 4 heads), encoder and decoder
    + 7 * D_MODEL  # layer norms: encoder 2 + final, decoder 3 + final
)


def tiny_t5() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=VOCAB,
        d_model=D_MODEL,
        d_kv=8,
        d_ff=D_FF,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return transformers.T5ForConditionalGeneration(config).eval()


def batch(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(2, VOCAB, (3, 10), generator=gen),
        "labels": torch.randint(2, VOCAB, (3, 4), generator=gen),
    }


def train(model: nn.Module, steps: int = 3) -> None:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    for step in range(steps):
        optimizer.zero_grad()
        model(**batch(step)).loss.backward()
        optimizer.step()
    model.eval()


def logits(model: nn.Module) -> torch.Tensor:
    model.eval()
    inputs = batch(99)
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], labels=inputs["labels"]).logits


def all_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer under every name it has (tied aliases included)."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return {n: t.detach().clone() for n, t in tensors.items()}


def check_trains_saves_and_loads(spec: Any, directory: Path) -> nn.Module:
    """Adapt a tiny T5 with ``spec``, train it: only the adapter changes and the base weights
    stay bit-identical; saved and loaded into a fresh base, it forecasts as trained."""
    from vitalfm.methods.adapting import adapt, load_adapted, merge_for_inference, save_adapted

    original = tiny_t5()
    model = adapt(tiny_t5(), spec, TARGETS)
    before = all_tensors(model)
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    train(model)
    after = all_tensors(model)
    assert {n for n in before if not torch.equal(before[n], after[n])} == trainable
    save_adapted(model, spec, directory)
    saved = json.loads((directory / "adapter_config.json").read_text())
    assert saved["peft_type"] == spec.method.peft_type
    expected = logits(merge_for_inference(model))
    assert not torch.allclose(expected, logits(original), atol=1e-5)  # training did something
    loaded = load_adapted(tiny_t5(), spec, directory)
    torch.testing.assert_close(logits(loaded), expected, atol=1e-5, rtol=0)
    return model
