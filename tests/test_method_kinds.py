"""The study's method kinds on tiny random models: what trains, counts, save/load, errors.

IA³, LoHa and LoKr have test files of their own (tests/test_method_ia3.py, ...).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from method_testing import (
    D_FF,
    D_MODEL,
    N_ATTN,
    T5_TOTAL,
    TARGETS,
    all_tensors,
    batch,
    logits,
    tiny_t5,
    train,
)
from torch import nn

from vitalfm.errors import ConfigError
from vitalfm.methods import MethodSpec, method_kind
from vitalfm.methods.adapting import (
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
KINDS = list(SPECS)
TRAINABLE_KINDS = [k for k in KINDS if method_kind(k).trains]
SAVED_KINDS = [k for k in KINDS if method_kind(k).saves != "model"]
ADAPTER_KINDS = [k for k in KINDS if method_kind(k).saves == "adapter"]


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def t5_base() -> nn.Module:
    return tiny_t5()


@pytest.fixture
def base(t5_base: nn.Module) -> nn.Module:
    return copy.deepcopy(t5_base)


# --- what trains ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_parameter_counts(base: nn.Module, kind: str) -> None:
    spec, expected = SPECS[kind]
    model = adapt(base, spec, TARGETS)
    trainable, total = parameter_counts(model)
    assert trainable == expected
    assert total == T5_TOTAL + (expected if kind in (*ADAPTER_KINDS, "bitfit") else 0)
    assert set(trainable_state(model)) == {
        n for n, p in model.named_parameters() if p.requires_grad
    }


@pytest.mark.parametrize("kind", TRAINABLE_KINDS)
def test_a_step_changes_only_the_trainable_parameters(base: nn.Module, kind: str) -> None:
    spec, _ = SPECS[kind]
    model = adapt(base, spec, TARGETS)
    before = all_tensors(model)
    trainable = {n for n, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    train(model)
    after = all_tensors(model)
    assert set(before) == set(after)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == trainable


def test_lora_leaves_base_weights_bit_identical(base: nn.Module, t5_base: nn.Module) -> None:
    model = adapt(base, SPECS["lora"][0], TARGETS)
    train(model, steps=5)
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
    expected = logits(base)
    model = adapt(base, SPECS["bitfit"][0], TARGETS)
    assert model.encoder.block[0].layer[0].SelfAttention.q.bias is not None
    assert torch.equal(model.encoder.block[0].layer[0].SelfAttention.q.bias, torch.zeros(32))
    torch.testing.assert_close(logits(model), expected, atol=1e-6, rtol=0)


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
        train(model)
    directory = tmp_path / "adapter"
    save_adapted(model, spec, directory)
    save_adapted(model, spec, directory)  # replacing an existing folder works too
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]  # no temporary folders left
    files = {p.name for p in directory.iterdir()}
    if kind in ADAPTER_KINDS:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= files
        unmerged = logits(model)
    else:
        assert files == {"tuned_parameters.json", "tuned_parameters.safetensors"}
        index = json.loads((directory / "tuned_parameters.json").read_text())
        assert index["method"]["kind"] == kind
        assert set(index["parameters"]) == set(trainable_state(model))

    trained = merge_for_inference(model)
    assert type(trained) is type(t5_base)
    expected = logits(trained)
    if kind in ADAPTER_KINDS:
        torch.testing.assert_close(expected, unmerged, atol=1e-4, rtol=1e-4)
    if kind != "zero_shot":
        assert not torch.allclose(expected, logits(t5_base), atol=1e-4)  # training did something

    loaded = load_adapted(copy.deepcopy(t5_base), spec, directory)
    assert type(loaded) is type(t5_base)
    assert parameter_counts(loaded)[0] == 0
    torch.testing.assert_close(logits(loaded), expected, atol=1e-6, rtol=0)


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
    with pytest.raises(ModelError, match="not zero_shot"):
        load_adapted(copy.deepcopy(t5_base), SPECS["zero_shot"][0], directory)
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
    spec = MethodSpec.from_config("f", {"kind": "fourierft"})  # peft's default 1000 does not fit
    with pytest.raises(ConfigError, match="n_frequency 1000 exceeds"):
        adapt(copy.deepcopy(model), spec, targets)
    spec = MethodSpec.from_config("f", {"kind": "fourierft", "n_frequency": 32})
    assert parameter_counts(adapt(model, spec, targets))[0] == 2 * 32


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"kind": "lorra", "rank": 2}, "unknown or missing kind"),
        ({"rank": 2}, "unknown or missing kind"),
        ({"kind": "lora", "rank": 0}, "rank must be a whole number from 1 to 4096"),
        ({"kind": "lora", "rank": 2.5}, "rank must be a whole number"),
        ({"kind": "lora", "rank": True}, "rank must be a whole number"),
        ({"kind": "lora", "rank": 2, "alpha": -1}, "alpha must be a number greater than 0"),
        ({"kind": "lora", "rank": 2, "alpha": float("nan")}, "alpha must be a number"),
        ({"kind": "lora", "rank": 2, "dropout": 1.0}, "dropout must be a number from 0 to 0.9"),
        ({"kind": "lora", "rank": 2, "scope": "everything"}, "scope must be one of attention"),
        ({"kind": "bitfit", "biases": "all"}, "biases must be one of added, relative_attention"),
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
    assert (fourier.n_frequency, fourier.scaling) == (1000, 150.0)  # peft's defaults
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
#: Counts on the released shapes: LoRA rank 2 on q, k, v, o of every attention block (the
#: counts reported for the study), and BitFit on T5's only biases, its relative-attention-bias
#: tables (32 buckets x heads, in the first encoder and the first decoder block).
RELEASED_COUNTS = {
    ("tiny", "lora"): 49_152,
    ("base", "lora"): 442_368,
    ("tiny", "bitfit"): 256,
    ("base", "bitfit"): 768,
}
RELEASED_SPECS = {
    "lora": MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16, dropout=0.0),
    "bitfit": MethodSpec(name="bitfit-rab", kind="bitfit", biases="relative_attention"),
}


@pytest.mark.parametrize(("shape", "method"), list(RELEASED_COUNTS))
def test_counts_match_the_literature_on_released_shapes(shape: str, method: str) -> None:
    """On models of Chronos-T5-tiny's and -base's shapes (meta device: shapes only), with the
    family's own targets: LoRA rank 2 trains 2 x rank x d_model per projection, 4 projections
    in each of the encoder's self-attention and the decoder's self- and cross-attention blocks;
    BitFit's relative-attention variant trains 2 x 32 x heads."""
    from vitalfm.models.chronos.t5 import ChronosT5Forecaster

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
    forecaster = ChronosT5Forecaster.__new__(ChronosT5Forecaster)  # only its targets are used
    adapted = adapt(model, RELEASED_SPECS[method], forecaster.target_modules())
    trainable, _ = parameter_counts(adapted)
    by_formula = {"lora": 2 * 2 * d_model * 4 * 3 * layers, "bitfit": 2 * 32 * heads}[method]
    assert trainable == RELEASED_COUNTS[shape, method] == by_formula


def test_bitfit_relative_attention_variant(
    base: nn.Module, t5_base: nn.Module, tmp_path: Path
) -> None:
    """Only the relative-attention-bias tables train; saved and loaded like any tensor kind;
    a model without such tables is refused with the variant that fits it."""
    spec = RELEASED_SPECS["bitfit"]
    model = adapt(base, spec, TARGETS)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    }
    train(model)
    expected = logits(model)
    assert not torch.allclose(expected, logits(t5_base), atol=1e-5)
    save_adapted(model, spec, tmp_path / "rab")
    loaded = load_adapted(copy.deepcopy(t5_base), spec, tmp_path / "rab")
    torch.testing.assert_close(logits(loaded), expected, atol=1e-6, rtol=0)
    with pytest.raises(ModelError, match="biases: added"):
        adapt(nn.Sequential(nn.Linear(4, 4)), spec, TargetModules(attention=("0",)))


def test_layernorm_is_tuned_in_place_because_peft_cannot_merge_every_family_norm(
    t5_base: nn.Module,
) -> None:
    """The layernorm module's reason for not using peft's LN tuning: on a T5 it trains the
    same norms to bit-identical weights, but it cannot merge a norm whose parameter is not
    named ``weight`` (Lag-Llama's RMSNorm ``scale``). If peft lifts that limit, this fails."""
    import peft

    from vitalfm.methods.modules import matches_any, peft_targets
    from vitalfm.models.lag_llama.network import RMSNorm

    def fit(model: nn.Module) -> torch.Tensor:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-2)
        model.train()
        for step in range(4):
            optimizer.zero_grad()
            model(**batch(step)).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.01)
            optimizer.step()
        return logits(merge_for_inference(model))

    in_place = adapt(copy.deepcopy(t5_base), SPECS["layernorm"][0], TARGETS)
    config = peft.LNTuningConfig(target_modules=peft_targets(TARGETS.norms))
    through_peft = peft.get_peft_model(copy.deepcopy(t5_base), config)
    assert {n for n, p in in_place.named_parameters() if p.requires_grad} == {
        n
        for n, _ in in_place.named_parameters()
        if matches_any(n.rpartition(".")[0], TARGETS.norms)
    }
    assert torch.equal(fit(in_place), fit(through_peft))

    rms = nn.Sequential(nn.Linear(4, 4), RMSNorm(4))
    wrapped = peft.get_peft_model(rms, peft.LNTuningConfig(target_modules=["1"]))
    with pytest.raises(AttributeError, match="weight"):
        wrapped.merge_and_unload()
