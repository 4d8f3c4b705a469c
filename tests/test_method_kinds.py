"""Adaptation methods on tiny random models: what trains, counts, save/load, errors."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from vitalfm.errors import ConfigError
from vitalfm.models.adaptation import (
    METHOD_KINDS,
    MethodSpec,
    adapt,
    load_adapted,
    merge_for_inference,
    parameter_counts,
    save_adapted,
    trainable_state,
)
from vitalfm.models.base import ModelError, TargetModules

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

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

SPECS: dict[str, tuple[MethodSpec, int]] = {
    # name: (spec, expected trainable parameters, computed by hand)
    "zero_shot": (MethodSpec.from_config("zs", {"kind": "zero_shot"}), 0),
    "lora": (
        MethodSpec.from_config("lora-r2", {"kind": "lora", "rank": 2}),
        N_ATTN * 2 * (D_MODEL + D_MODEL),
    ),
    "dora": (
        MethodSpec.from_config("dora-r2", {"kind": "dora", "rank": 2}),
        N_ATTN * (2 * (D_MODEL + D_MODEL) + D_MODEL),  # + one magnitude per output feature
    ),
    "vera": (  # rank 256 (the default): lambda_d (r) and lambda_b (out) per layer
        MethodSpec.from_config("vera", {"kind": "vera"}),
        N_ATTN * (256 + D_MODEL),
    ),
    "fourierft": (
        MethodSpec.from_config("fft", {"kind": "fourierft", "n_frequency": 100}),
        N_ATTN * 100,
    ),
    "bitfit": (
        MethodSpec.from_config("bitfit", {"kind": "bitfit"}),
        N_ATTN * D_MODEL + 2 * D_FF + 2 * D_MODEL,  # one bias per output of q,k,v,o,wi,wo
    ),
    "layernorm": (MethodSpec.from_config("ln", {"kind": "layernorm"}), 3 * D_MODEL),
    "full": (MethodSpec.from_config("full", {"kind": "full"}), T5_TOTAL),
}
TRAINABLE_KINDS = [k for k in METHOD_KINDS if k != "zero_shot"]
SAVED_KINDS = [k for k in METHOD_KINDS if k != "full"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matrices gain nothing from threads, and on a busy machine threads cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def t5_base() -> nn.Module:
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


@pytest.fixture
def base(t5_base: nn.Module) -> nn.Module:
    return copy.deepcopy(t5_base)


def _batch(seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(2, VOCAB, (3, 10), generator=gen),
        "labels": torch.randint(2, VOCAB, (3, 4), generator=gen),
    }


def _train(model: nn.Module, steps: int = 3) -> None:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    for step in range(steps):
        optimizer.zero_grad()
        model(**_batch(step)).loss.backward()
        optimizer.step()
    model.eval()


def _logits(model: nn.Module) -> torch.Tensor:
    model.eval()
    batch = _batch(99)
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], labels=batch["labels"]).logits


def _all_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer under every name it has (tied aliases included)."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return {n: t.detach().clone() for n, t in tensors.items()}


# --- what trains ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", METHOD_KINDS)
def test_parameter_counts(base: nn.Module, kind: str) -> None:
    spec, expected = SPECS[kind]
    model = adapt(base, spec, TARGETS)
    trainable, total = parameter_counts(model)
    assert trainable == expected
    assert total == T5_TOTAL + (
        expected if kind in ("lora", "dora", "vera", "fourierft", "bitfit") else 0
    )
    assert set(trainable_state(model)) == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize("kind", TRAINABLE_KINDS)
def test_a_step_changes_only_the_trainable_parameters(base: nn.Module, kind: str) -> None:
    spec, _ = SPECS[kind]
    model = adapt(base, spec, TARGETS)
    before = _all_tensors(model)
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    _train(model)
    after = _all_tensors(model)
    assert set(before) == set(after)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable


def test_lora_leaves_base_weights_bit_identical(base: nn.Module, t5_base: nn.Module) -> None:
    model = adapt(base, SPECS["lora"][0], TARGETS)
    _train(model, steps=5)
    original = t5_base.state_dict()
    adapted = {
        n.removeprefix("base_model.model.").replace(".base_layer", ""): t
        for n, t in model.state_dict().items()
        if "lora_" not in n
    }
    assert set(original) <= set(adapted)
    for name, tensor in original.items():
        assert torch.equal(tensor, adapted[name]), name


def test_zero_shot_trains_nothing(base: nn.Module) -> None:
    model = adapt(base, SPECS["zero_shot"][0], TARGETS)
    assert model is base
    assert parameter_counts(model) == (0, T5_TOTAL)
    assert trainable_state(model) == {}


def test_bitfit_at_init_leaves_the_forward_unchanged(base: nn.Module) -> None:
    expected = _logits(base)
    model = adapt(base, SPECS["bitfit"][0], TARGETS)
    assert model.encoder.block[0].layer[0].SelfAttention.q.bias is not None
    assert torch.equal(model.encoder.block[0].layer[0].SelfAttention.q.bias, torch.zeros(32))
    torch.testing.assert_close(_logits(model), expected, atol=1e-6, rtol=0)


def test_bitfit_unfreezes_existing_biases() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    targets = TargetModules(attention=("0",), bias_linears=("2",))
    adapt(model, SPECS["bitfit"][0], targets)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"0.bias", "2.bias"}


def test_scope_attention_ffn_and_explicit_targets(base: nn.Module, t5_base: nn.Module) -> None:
    spec = MethodSpec.from_config("l", {"kind": "lora", "rank": 2, "scope": "attention+ffn"})
    per_ffn = 2 * 2 * (D_MODEL + D_FF)  # wi and wo, encoder and decoder: r * (in + out) each
    ffn = 2 * per_ffn
    expected = N_ATTN * 2 * 2 * D_MODEL + ffn
    assert parameter_counts(adapt(base, spec, TARGETS))[0] == expected
    regex = {"kind": "lora", "rank": 2, "target_modules": [r"encoder\..*\.q", "v"]}
    spec = MethodSpec.from_config("l", regex)  # encoder q (1) + every v (3), as one peft regex
    assert parameter_counts(adapt(copy.deepcopy(t5_base), spec, TARGETS))[0] == 4 * 2 * 64
    spec = MethodSpec.from_config("l", {"kind": "lora", "rank": 2, "target_modules": ["wi"]})
    assert parameter_counts(adapt(copy.deepcopy(t5_base), spec, TARGETS))[0] == 2 * 2 * (
        D_MODEL + D_FF
    )


# --- saving and loading -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SAVED_KINDS)
def test_save_then_load_reproduces_the_trained_model(
    base: nn.Module, t5_base: nn.Module, kind: str, tmp_path: Path
) -> None:
    spec, _ = SPECS[kind]
    model = adapt(base, spec, TARGETS)
    if kind != "zero_shot":
        _train(model)
    directory = tmp_path / "adapter"
    save_adapted(model, spec, directory)
    save_adapted(model, spec, directory)  # replacing an existing folder works too
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary folders left
    files = {p.name for p in directory.iterdir()}
    if kind in ("lora", "dora", "vera", "fourierft"):
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        unmerged = _logits(model)
    else:
        assert files == {"tuned_parameters.json", "tuned_parameters.safetensors"}
        index = json.loads((directory / "tuned_parameters.json").read_text())
        assert index["method"]["kind"] == kind
        assert set(index["parameters"]) == set(trainable_state(model))

    trained = merge_for_inference(model)
    assert type(trained) is type(t5_base)
    expected = _logits(trained)
    if kind in ("lora", "dora", "vera", "fourierft"):
        torch.testing.assert_close(expected, unmerged, atol=1e-4, rtol=1e-4)
    if kind != "zero_shot":
        assert not torch.allclose(expected, _logits(t5_base), atol=1e-4)  # training did something

    loaded = load_adapted(copy.deepcopy(t5_base), spec, directory)
    assert type(loaded) is type(t5_base)
    assert parameter_counts(loaded)[0] == 0
    torch.testing.assert_close(_logits(loaded), expected, atol=1e-6, rtol=0)


def test_full_is_not_saved_as_an_adaptation(base: nn.Module, tmp_path: Path) -> None:
    spec = SPECS["full"][0]
    with pytest.raises(ModelError, match="save_pretrained"):
        save_adapted(adapt(base, spec, TARGETS), spec, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_load_errors(base: nn.Module, t5_base: nn.Module, tmp_path: Path) -> None:
    lora = SPECS["lora"][0]
    with pytest.raises(ModelError, match="does not exist"):
        load_adapted(copy.deepcopy(t5_base), lora, tmp_path / "missing")

    directory = tmp_path / "lora"
    save_adapted(adapt(base, lora, TARGETS), lora, directory)
    with pytest.raises(ModelError, match="not vera"):
        load_adapted(copy.deepcopy(t5_base), SPECS["vera"][0], directory)
    (directory / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_adapted(copy.deepcopy(t5_base), lora, directory)
    (directory / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match=r"adapter_model\.safetensors is missing"):
        load_adapted(copy.deepcopy(t5_base), lora, directory)

    bitfit = SPECS["bitfit"][0]
    directory = tmp_path / "bitfit"
    save_adapted(adapt(copy.deepcopy(t5_base), bitfit, TARGETS), bitfit, directory)
    with pytest.raises(ModelError, match="not layernorm"):
        load_adapted(copy.deepcopy(t5_base), SPECS["layernorm"][0], directory)
    (directory / "tuned_parameters.json").write_text("{truncated")
    with pytest.raises(ModelError, match="cannot be loaded"):
        load_adapted(copy.deepcopy(t5_base), bitfit, directory)


# --- bad targets and bad config ---------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"kind": "lora", "rank": 2, "target_modules": ["query", "value"]},
        {"kind": "lora", "rank": 2, "target_modules": ["q", "value"]},  # one of two missing
        {"kind": "vera", "target_modules": ["query"]},
        {"kind": "bitfit", "target_modules": ["query"]},
    ],
)
def test_targets_matching_nothing_name_the_real_modules(base: nn.Module, entry: Any) -> None:
    spec = MethodSpec.from_config("bad", entry)
    with pytest.raises(ModelError) as info:
        adapt(base, spec, TARGETS)
    message = str(info.value)
    assert "value" in message or "query" in message
    assert "wi" in message and "SelfAttention.q" in message
    assert "target_modules" in message


def test_layernorm_patterns_must_match_norms(base: nn.Module) -> None:
    spec = MethodSpec.from_config("ln", {"kind": "layernorm", "target_modules": ["ln_attn"]})
    with pytest.raises(ModelError, match=r"layer\.0\.layer_norm"):
        adapt(base, spec, TARGETS)
    spec = MethodSpec.from_config("ln", {"kind": "layernorm", "target_modules": ["q"]})
    with pytest.raises(ModelError, match="not normalisation layers"):
        adapt(copy.deepcopy(base), spec, TARGETS)


def test_family_targets_matching_nothing(base: nn.Module) -> None:
    targets = TargetModules(attention=("q_proj", "v_proj"))
    with pytest.raises(ModelError, match="family's target_modules"):
        adapt(base, SPECS["lora"][0], targets)


def test_fourierft_n_frequency_must_fit_the_layers() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
    targets = TargetModules(attention=("0", "2"))
    spec = MethodSpec.from_config("f", {"kind": "fourierft", "n_frequency": 33})
    with pytest.raises(ConfigError, match="n_frequency <= 32"):
        adapt(copy.deepcopy(model), spec, targets)
    spec = MethodSpec.from_config("f", {"kind": "fourierft"})  # default 1000 shrinks to 32
    assert parameter_counts(adapt(model, spec, targets))[0] == 2 * 32


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"kind": "lorra", "rank": 2}, "unknown or missing kind"),
        ({"rank": 2}, "unknown or missing kind"),
        ({"kind": "lora"}, "needs a rank"),
        ({"kind": "lora", "rank": 0}, "positive integer"),
        ({"kind": "lora", "rank": 2.5}, "positive integer"),
        ({"kind": "lora", "rank": 2, "alpha": -1}, "positive number"),
        ({"kind": "lora", "rank": 2, "dropout": 1.0}, r"\[0, 1\)"),
        ({"kind": "lora", "rank": 2, "scope": "everything"}, "unknown scope"),
        ({"kind": "lora", "rank": 2, "target_modules": "q"}, "list"),
        ({"kind": "lora", "rank": 2, "target_modules": []}, "list"),
        ({"kind": "lora", "rank": 2, "rnak": 4}, "unknown key"),
        ({"kind": "bitfit", "rank": 4}, "does not use rank"),
        ({"kind": "fourierft", "dropout": 0.1}, "does not use dropout"),
    ],
)
def test_bad_config(entry: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        MethodSpec.from_config("m", entry)


def test_config_defaults_and_round_trip() -> None:
    lora = MethodSpec.from_config("lora-r2", {"kind": "lora", "rank": 2, "learning_rate": 1e-3})
    assert (lora.rank, lora.alpha, lora.dropout, lora.scope) == (2, 16.0, 0.05, "attention")
    assert MethodSpec.from_config("v", {"kind": "vera"}).rank == 256
    fourier = MethodSpec.from_config("f", {"kind": "fourierft"})
    assert (fourier.n_frequency, fourier.scaling) == (None, None)  # resolved by adapt
    for spec, _ in SPECS.values():
        assert MethodSpec.from_config(spec.name, spec.to_dict()) == spec
    assert lora.to_dict() == {
        "name": "lora-r2",
        "kind": "lora",
        "rank": 2,
        "alpha": 16.0,
        "dropout": 0.05,
        "scope": "attention",
        "learning_rate": 1e-3,
    }


# --- Chronos-Bolt: peft needs get_input_embeddings ------------------------------------------------


def test_chronos_bolt_lora_round_trip(tmp_path: Path) -> None:
    bolt = pytest.importorskip("chronos.chronos_bolt")
    torch.manual_seed(0)
    config = transformers.T5Config(
        d_model=D_MODEL,
        d_kv=8,
        d_ff=D_FF,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=4,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        initializer_factor=0.05,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        vocab_size=2,
        is_encoder_decoder=True,
        architectures=["ChronosBoltModelForForecasting"],
        chronos_pipeline_class="ChronosBoltPipeline",
        chronos_config={
            "context_length": 64,
            "prediction_length": 12,
            "input_patch_size": 16,
            "input_patch_stride": 16,
            "quantiles": [0.1, 0.5, 0.9],
            "use_reg_token": True,
        },
    )
    original = bolt.ChronosBoltModelForForecasting(config).eval()
    spec = SPECS["lora"][0]
    model = adapt(copy.deepcopy(original), spec, TARGETS)
    assert parameter_counts(model)[0] == N_ATTN * 2 * 2 * D_MODEL
    gen = torch.Generator().manual_seed(0)
    context, target = torch.randn(4, 64, generator=gen), torch.randn(4, 12, generator=gen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        model(context=context, target=target).loss.backward()
        optimizer.step()
    save_adapted(model, spec, tmp_path / "bolt")
    trained = merge_for_inference(model).eval()
    loaded = load_adapted(copy.deepcopy(original), spec, tmp_path / "bolt")
    with torch.no_grad():
        expected = trained(context=context).quantile_preds
        assert not torch.allclose(expected, original(context=context).quantile_preds)
        torch.testing.assert_close(
            loaded(context=context).quantile_preds, expected, atol=1e-6, rtol=0
        )


# --- parameter counts of the released shapes (the literature's numbers) --------------------------

#: Chronos-T5 shapes (its config.json): d_model, layers per stack, heads, d_kv, d_ff.
T5_SHAPES = {"tiny": (256, 4, 4, 64, 1024), "base": (768, 12, 12, 64, 3072)}
#: LoRA rank 2 on q, k, v, o of every attention block: the counts reported for the study.
LORA_R2_COUNTS = {"tiny": 49_152, "base": 442_368}


@pytest.mark.parametrize("shape", T5_SHAPES)
def test_lora_rank_2_counts_match_the_study_on_released_shapes(shape: str) -> None:
    """On randomly initialised models of Chronos-T5-tiny's and -base's shapes, the study's
    LoRA (rank 2, the family's attention targets) trains exactly the reported parameters:
    2 x rank x d_model per projection, 4 projections in each of the encoder's self-attention
    and the decoder's self- and cross-attention blocks."""
    from vitalfm.models.chronos import ChronosForecaster

    d_model, layers, heads, d_kv, d_ff = T5_SHAPES[shape]
    config = transformers.T5Config(
        vocab_size=4096,
        d_model=d_model,
        d_kv=d_kv,
        d_ff=d_ff,
        num_layers=layers,
        num_decoder_layers=layers,
        num_heads=heads,
        feed_forward_proj="relu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.device("meta"):  # shapes only: no memory, no random init
        model = transformers.T5ForConditionalGeneration(config)
    forecaster = ChronosForecaster.__new__(ChronosForecaster)  # only its T5 targets are used
    forecaster.variant = "chronos-t5"
    spec = MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16, dropout=0.0)
    adapted = adapt(model, spec, forecaster.target_modules())
    trainable, _ = parameter_counts(adapted)
    assert trainable == LORA_R2_COUNTS[shape] == 2 * 2 * d_model * 4 * 3 * layers
