"""The Chronos family: released-format round trips, library equivalence, bad sources, every
adaptation method end to end through the engine's run functions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vitalfm.engine.forecast import ForecastConfig, forecast_windows
from vitalfm.engine.train import Trainer, TrainingConfig
from vitalfm.engine.training_data import WindowTrainingData, usable_rows
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import adapt, load_adapted, merge_for_inference, save_adapted
from vitalfm.models.base import ModelError, ModelSource, SeriesBatch
from vitalfm.models.chronos import (
    Chronos2Forecaster,
    ChronosBoltForecaster,
    ChronosForecaster,
    ChronosT5Forecaster,
)
from vitalfm.models.registry import forecaster_class
from vitalfm.testing import (
    every_setting,
    run_every_setting,
    tiny_study_config,
    toy_window_files,
    toy_windows,
)

CPU = torch.device("cpu")
VITALS = ("heart_rate", "mbp")


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def standin_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stand-in, randomly initialised and saved in the released format."""
    root = tmp_path_factory.mktemp("standins")
    dirs = {}
    for name in ChronosForecaster.standin_names():
        dirs[name] = root / name
        ChronosForecaster.standin(name, horizon=12, seed=0).save_pretrained(dirs[name])
    return dirs


def load(path: Path) -> ChronosForecaster:
    return ChronosForecaster.load(ModelSource(path=str(path)), CPU)


def test_family_is_found_by_name() -> None:
    assert forecaster_class("chronos") is ChronosForecaster
    with pytest.raises(Exception, match="unknown model family 'nope'"):
        forecaster_class("nope")


def test_the_checkpoint_config_chooses_the_variant_class(standin_dirs: dict[str, Path]) -> None:
    """As chronos-forecasting picks its pipeline class: by the config's
    chronos_pipeline_class, ChronosPipeline where there is none (released T5 checkpoints)."""
    classes = {
        "chronos-t5": ChronosT5Forecaster,
        "chronos-bolt": ChronosBoltForecaster,
        "chronos-2": Chronos2Forecaster,
    }
    assert ChronosForecaster.standin_names() == tuple(classes)
    for name, variant in classes.items():
        config = json.loads((standin_dirs[name] / "config.json").read_text())
        assert ChronosForecaster.variant_for_config(config) is variant
        forecaster = load(standin_dirs[name])
        assert type(forecaster) is variant and forecaster.variant == variant.VARIANT == name
    assert ChronosForecaster.variant_for_config({"chronos_config": {}}) is ChronosT5Forecaster
    with pytest.raises(ModelError, match="Chronos3Pipeline is not a supported Chronos pipeline"):
        ChronosForecaster.variant_for_config({"chronos_pipeline_class": "Chronos3Pipeline"})
    with pytest.raises(ModelError, match="holds a chronos-t5 checkpoint, not a chronos-bolt"):
        ChronosBoltForecaster.load(ModelSource(path=str(standin_dirs["chronos-t5"])), CPU)
    with pytest.raises(ModelError, match="is not a supported Chronos pipeline for"):
        ChronosBoltForecaster(load(standin_dirs["chronos-2"]).pipeline, ModelSource(path="x"))
    with pytest.raises(ModelError, match="unknown Chronos stand-in 'chronos-3'"):
        ChronosForecaster.standin("chronos-3", horizon=12, seed=0)


@pytest.mark.parametrize("name", ["chronos-t5", "chronos-bolt", "chronos-2"])
def test_standins_load_with_the_library_loader(name: str, standin_dirs: dict[str, Path]) -> None:
    from chronos import BaseChronosPipeline

    pipeline = BaseChronosPipeline.from_pretrained(standin_dirs[name], device_map="cpu")
    expected = {
        "chronos-t5": "ChronosPipeline",
        "chronos-bolt": "ChronosBoltPipeline",
        "chronos-2": "Chronos2Pipeline",
    }[name]
    assert type(pipeline).__name__ == expected
    assert load(standin_dirs[name]).variant == name
    files = {p.name for p in standin_dirs[name].iterdir()}
    assert {"config.json", "model.safetensors"} <= files


@pytest.mark.parametrize("name", ["chronos-bolt", "chronos-2"])
def test_engine_zero_shot_equals_library_predict_window_by_window(
    name: str, standin_dirs: dict[str, Path]
) -> None:
    forecaster = load(standin_dirs[name])
    windows = toy_windows("test", n_stays=2)
    table = forecast_windows(
        forecaster, windows, VITALS, ForecastConfig(batch_size=16), progress=False
    ).table
    frame = table.to_pandas()
    pipeline = load(standin_dirs[name]).pipeline  # a separate copy, called per window
    for vital in VITALS:
        rows = usable_rows(windows, vital)
        context = windows.context(vital, rows)
        mine = frame[frame.vital == vital]
        for i, row in enumerate(rows[:5]):
            single = torch.from_numpy(context[i])
            if name == "chronos-bolt":
                reference = pipeline.predict(single[None], prediction_length=12)[0]
            else:
                reference = pipeline.predict(single[None, None], prediction_length=12)[0][0]
            median = reference[list(pipeline.quantiles).index(0.5)].numpy()
            got = mine[mine.window_id == row].sort_values("step")
            np.testing.assert_allclose(got["median"].to_numpy(), median, rtol=1e-5, atol=1e-4)
            q90 = reference[list(pipeline.quantiles).index(0.9)].numpy()
            np.testing.assert_allclose(got["q0.9"].to_numpy(), q90, rtol=1e-5, atol=1e-4)


def holed_contexts(rows: int, length: int = 24) -> torch.Tensor:
    """Random vital-like contexts with leading and interior gaps (and one without a value)."""
    generator = torch.Generator().manual_seed(3)
    context = 80 + 10 * torch.randn(rows, length, generator=generator)
    context[::5, :7] = float("nan")
    context[1::7, 3:9] = float("nan")
    context[2] = float("nan")
    return context


def test_chronos2_forecasts_equal_the_pipeline_predict(
    standin_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chronos2Forecaster.predict feeds the pipeline's batches itself (no per-series dataset),
    in passes of PREDICT_BATCH rows; a horizon beyond one forward pass goes through predict."""
    from vitalfm.models.chronos.chronos2 import PREDICT_BATCH

    forecaster = load(standin_dirs["chronos-2"])
    pipeline = forecaster.pipeline
    contexts = holed_contexts(PREDICT_BATCH + 40)
    longer = holed_contexts(9, length=pipeline.model_context_length + 20)  # truncated
    patched = pipeline.model_output_patch_size * pipeline.max_output_patches
    real = pipeline.predict
    calls: list[int] = []

    def predict(*args: object, **kwargs: object) -> list[torch.Tensor]:
        calls.append(1)
        return real(*args, **kwargs)

    for context, horizon in ((contexts, 12), (contexts, patched), (longer, 5), (longer, 80)):
        library = torch.cat(real(context[:, None], prediction_length=horizon))
        calls.clear()
        monkeypatch.setattr(pipeline, "predict", predict)
        mine = forecaster.predict(context, horizon, 0).quantiles
        monkeypatch.undo()
        assert torch.equal(mine, library)
        assert len(calls) == (horizon > patched)


def test_bolt_forecasts_the_same_without_building_a_decoder_cache(
    standin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    forecaster = load(standin_dirs["chronos-bolt"])
    assert forecaster.module.decoder.config.use_cache is False
    context = holed_contexts(50)
    mine = forecaster.predict(context, 12, 0).quantiles
    forecaster.save_pretrained(tmp_path)  # the checkpoint's config is left as it was
    saved = json.loads((tmp_path / "config.json").read_text())
    original = json.loads((standin_dirs["chronos-bolt"] / "config.json").read_text())
    assert saved.get("use_cache") == original.get("use_cache")
    forecaster.module.decoder.config.use_cache = True
    assert torch.equal(mine, forecaster.predict(context, 12, 0).quantiles)


def test_t5_library_sampler_equals_the_pipeline_for_the_same_seed(
    standin_dirs: dict[str, Path],
) -> None:
    forecaster = load(standin_dirs["chronos-t5"])
    forecaster.configure({"sampler": "library"})  # models.<name>.options in the config
    context = torch.from_numpy(toy_windows("test").context("heart_rate")[:6])
    torch.manual_seed(7)
    mine = forecaster.predict(context, 12, num_samples=10).samples
    torch.manual_seed(7)
    library = load(standin_dirs["chronos-t5"]).pipeline.predict(
        context, prediction_length=12, num_samples=10
    )
    assert torch.equal(mine, library)
    with pytest.raises(ModelError, match="option sampler = 'exact' is not fast or library"):
        forecaster.configure({"sampler": "exact"})
    with pytest.raises(ModelError, match="family chronos has no option"):
        load(standin_dirs["chronos-bolt"]).configure({"sampler": "library"})


def test_t5_fast_sampler_draws_from_the_pipeline_distribution(
    standin_dirs: dict[str, Path],
) -> None:
    forecaster = load(standin_dirs["chronos-t5"])
    with torch.no_grad():  # sharpen the random model so its distribution has structure
        forecaster.module.lm_head.weight.mul_(30)
    context = torch.from_numpy(toy_windows("test").context("heart_rate")[:2])
    draws = {}
    for sampler in ("fast", "library"):
        forecaster.t5_sampler = sampler
        torch.manual_seed(0)
        draws[sampler] = forecaster.predict(context, 1, num_samples=3000).samples[:, :, 0]
    for row in range(2):
        fast, library = draws["fast"][row], draws["library"][row]
        spread = float(torch.cat([fast, library]).std()) / np.sqrt(3000)
        assert abs(float(fast.mean() - library.mean())) < 5 * spread + 1e-6
        for q in (0.25, 0.5, 0.75):
            assert (
                abs(float(fast.quantile(q) - library.quantile(q)))
                < 0.2 * float(library.std()) + 1e-6
            )


def test_unknown_hub_id_offline_says_how_to_use_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as err:
        ChronosForecaster.load(ModelSource(hub="amazon/chronos-t5-nonexistent"), CPU)
    assert "source: {path: <folder>}" in str(err.value)


def test_local_folder_with_missing_or_foreign_files(
    tmp_path: Path, standin_dirs: dict[str, Path]
) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "absent")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((standin_dirs["chronos-t5"] / "config.json").read_text())
    with pytest.raises(ModelError, match=r"lacks model\.safetensors"):
        load(partial)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (foreign / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match="not a Chronos checkpoint"):
        load(foreign)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((standin_dirs["chronos-2"] / "config.json").read_text())
    (truncated / "model.safetensors").write_bytes(
        (standin_dirs["chronos-2"] / "model.safetensors").read_bytes()[:1000]
    )
    with pytest.raises(ModelError, match="cannot load the Chronos checkpoint"):
        load(truncated)


def test_lora_training_leaves_base_weights_bit_identical(
    standin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    forecaster = load(standin_dirs["chronos-t5"])
    base = {k: v.clone() for k, v in forecaster.module.state_dict().items()}
    spec = MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16, dropout=0.05)
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    data = WindowTrainingData(
        toy_windows(), toy_windows("validation", seed=1), VITALS, seed=0, validation_max_series=32
    )
    Trainer(
        forecaster,
        data,
        TrainingConfig(max_steps=4, batch_size=8, learning_rate=1e-2),
        CPU,
        tmp_path,
        fingerprint={},
        progress=False,
    ).fit()
    after = {
        k.replace(".base_layer", ""): v
        for k, v in forecaster.module.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert after.keys() == base.keys()
    changed = [k for k in base if not torch.equal(base[k], after[k])]
    assert changed == []
    assert any("lora_B" in k and p.abs().sum() > 0 for k, p in forecaster.module.named_parameters())


def test_adapter_round_trip_gives_identical_forecasts(
    standin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    forecaster = load(standin_dirs["chronos-2"])
    spec = MethodSpec(name="dora-r2", kind="dora", rank=2, alpha=16)
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    data = WindowTrainingData(
        toy_windows(), toy_windows("validation", seed=1), VITALS, seed=0, validation_max_series=32
    )
    Trainer(
        forecaster,
        data,
        TrainingConfig(max_steps=3, batch_size=8, learning_rate=1e-2),
        CPU,
        tmp_path / "ck",
        fingerprint={},
        progress=False,
    ).fit()
    save_adapted(forecaster.module, spec, tmp_path / "adapter")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (tmp_path / "adapter").iterdir()
    }
    forecaster.set_module(merge_for_inference(forecaster.module))
    context = torch.from_numpy(toy_windows("test").context("mbp"))
    trained = forecaster.predict(context, 12, 1).quantiles

    reloaded = load(standin_dirs["chronos-2"])
    merged = load_adapted(reloaded.module, spec, tmp_path / "adapter")
    reloaded.set_module(merged)
    again = reloaded.predict(context, 12, 1).quantiles
    torch.testing.assert_close(again, trained, rtol=1e-5, atol=1e-5)
    untrained = load(standin_dirs["chronos-2"]).predict(context, 12, 1).quantiles
    assert not torch.allclose(untrained, trained)


@pytest.fixture(scope="module")
def window_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return toy_window_files(tmp_path_factory.mktemp("windows"))


@pytest.mark.parametrize(
    ("standin", "settings"),
    [
        ("chronos-t5", every_setting()),
        ("chronos-bolt", ["lora-r2", "bitfit", "full"]),
        ("chronos-2", ["vera-r16", "layernorm", "full"]),
    ],
)
def test_every_method_runs_end_to_end(
    standin: str,
    settings: list[str],
    standin_dirs: dict[str, Path],
    window_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    cfg = tiny_study_config("chronos", standin, vitals=VITALS)
    run_every_setting(cfg, settings, window_files, standin_dirs[standin], tmp_path)


def test_t5_loss_is_the_cross_entropy_of_the_value_tokens_only(
    standin_dirs: dict[str, Path],
) -> None:
    """Forecasting never samples EOS, so its label must not count: the loss is the mean CE of
    the observed value tokens (the one the old objective gave differs)."""
    forecaster = load(standin_dirs["chronos-t5"])
    windows = toy_windows("train")
    rows = usable_rows(windows, "mbp")[:8]
    context = torch.from_numpy(windows.context("mbp", rows))
    target = torch.from_numpy(windows.horizon("mbp", rows)).clone()
    target[1, 3:6] = float("nan")  # not scored
    batch = SeriesBatch(context, target)
    forecaster.module.eval()
    with torch.no_grad():
        forecaster.module.lm_head.weight.mul_(30)  # a random model is ~uniform on every token
        loss = forecaster.loss(batch)
        tokenizer = forecaster._train_tokenizer(12)
        ids, attention, scale = tokenizer.context_input_transform(context)
        labels, mask = tokenizer.label_input_transform(target, scale)
        assert labels.shape[1] == 13 and (labels[:, -1] == 1).all()  # EOS appended
        logits = forecaster.module(
            input_ids=ids, attention_mask=attention, labels=torch.where(mask, labels, -100)
        ).logits
        per_token = torch.nn.functional.cross_entropy(
            logits[:, :12].transpose(1, 2), labels[:, :12], reduction="none"
        )
        values = per_token[mask[:, :12]].mean()
        torch.testing.assert_close(loss, values)
        with_eos = per_token[mask[:, :12]].sum() + torch.nn.functional.cross_entropy(
            logits[:, 12], labels[:, 12], reduction="sum"
        )
        assert not torch.isclose(loss, with_eos / (mask[:, :12].sum() + len(rows)))
