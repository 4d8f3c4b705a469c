"""The MOIRAI family: released-format round trips, equality with uni2ts's own forecast modules
and losses, bad sources and options, every adaptation method end to end through the engine."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vitalfm.engine.forecast import ForecastConfig, forecast_windows, series_seeds, to_quantiles
from vitalfm.engine.train import Trainer, TrainingConfig
from vitalfm.engine.training_data import CorpusTrainingData, WindowTrainingData, usable_rows
from vitalfm.methods import MethodSpec
from vitalfm.methods.adapting import adapt, load_adapted, merge_for_inference, save_adapted
from vitalfm.models.base import ModelError, ModelSource, SeriesBatch
from vitalfm.models.moirai import (
    Moirai1Forecaster,
    Moirai2Forecaster,
    MoiraiForecaster,
    moirai_inputs,
)
from vitalfm.models.moirai.inputs import moirai2_inputs
from vitalfm.models.registry import forecaster_class
from vitalfm.synthetic.corpus import CorpusConfig, generate_corpus
from vitalfm.testing import (
    every_setting,
    run_every_setting,
    tiny_study_config,
    toy_window_files,
    toy_windows,
)

CPU = torch.device("cpu")
VITALS = ("heart_rate", "mbp")
STANDINS = ("moirai", "moirai-2")


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def standin_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each stand-in, randomly initialised and saved in the released format."""
    root = tmp_path_factory.mktemp("standins")
    dirs = {}
    for name in MoiraiForecaster.standin_names():
        dirs[name] = root / name
        MoiraiForecaster.standin(name, horizon=12, seed=0).save_pretrained(dirs[name])
    return dirs


def load(path: Path, **options: object) -> MoiraiForecaster:
    forecaster = MoiraiForecaster.load(ModelSource(path=str(path)), CPU)
    forecaster.configure(options)
    return forecaster


def uni2ts_module(path: Path) -> torch.nn.Module:
    """The checkpoint opened by uni2ts's own loader, independently of ours."""
    from uni2ts.model.moirai import MoiraiModule
    from uni2ts.model.moirai2 import Moirai2Module

    config = json.loads((path / "config.json").read_text())
    cls = Moirai2Module if "quantile_levels" in config else MoiraiModule
    with contextlib.redirect_stdout(io.StringIO()):
        return cls.from_pretrained(path)


def uni2ts_inputs(forecast_module: object, contexts: np.ndarray) -> dict[str, torch.Tensor]:
    """The batched inputs uni2ts's gluonts predictor builds for these contexts.

    Each context goes in as a series that starts at its first value, so that what precedes it
    is padding, as the engine reads leading NaN.
    """
    from gluonts.dataset.common import ListDataset

    series = [row[np.argmax(np.isfinite(row)) :].copy() for row in contexts]
    dataset = ListDataset([{"target": s, "start": "2020-01-01"} for s in series], freq="15min")
    predictor = forecast_module.create_predictor(batch_size=len(series), device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # gluonts' causal mean divides by 0
        entries = list(predictor.input_transform.apply(dataset, is_train=False))
    return {
        name: torch.as_tensor(np.stack([entry[name] for entry in entries]))
        for name in predictor.input_names
    }


def uni2ts_forecast(path: Path, context_length: int, **kwargs: object) -> object:
    from uni2ts.model.moirai import MoiraiForecast
    from uni2ts.model.moirai2 import Moirai2Forecast

    module = uni2ts_module(path)
    cls = Moirai2Forecast if hasattr(module, "quantile_levels") else MoiraiForecast
    return cls(
        prediction_length=12,
        target_dim=1,
        feat_dynamic_real_dim=0,
        past_feat_dynamic_real_dim=0,
        context_length=context_length,
        module=module,
        **kwargs,
    )


def holed_contexts() -> np.ndarray:
    """Test contexts with leading gaps of several lengths and interior gaps."""
    context = toy_windows("test", n_stays=2).context("mbp").astype(np.float32)
    context[0, :7] = np.nan
    context[1, :16] = np.nan
    context[2, :17] = np.nan
    context[3, 1:4] = np.nan
    return context


def test_family_is_found_by_name() -> None:
    assert forecaster_class("moirai") is MoiraiForecaster
    assert MoiraiForecaster.standin_names() == STANDINS


def test_the_checkpoint_config_chooses_the_variant_class(standin_dirs: dict[str, Path]) -> None:
    """MOIRAI 1.x configs have patch_sizes + distr_output, Moirai-2 configs patch_size +
    quantile_levels; a module already built picks its class by its type."""
    for name, variant in (("moirai", Moirai1Forecaster), ("moirai-2", Moirai2Forecaster)):
        config = json.loads((standin_dirs[name] / "config.json").read_text())
        assert MoiraiForecaster.variant_for_config(config, name) is variant
        forecaster = load(standin_dirs[name])
        assert type(forecaster) is variant and forecaster.variant == variant.VARIANT == name
        again = MoiraiForecaster.for_module(forecaster.module, forecaster.source)
        assert type(again) is variant
    with pytest.raises(ModelError, match="Moirai2Module is not a MoiraiModule"):
        Moirai1Forecaster(load(standin_dirs["moirai-2"]).module, ModelSource(path="x"))
    with pytest.raises(ModelError, match="unknown MOIRAI stand-in 'moirai-3'"):
        MoiraiForecaster.standin("moirai-3", horizon=12, seed=0)


@pytest.mark.parametrize("name", STANDINS)
def test_standins_load_with_the_uni2ts_loader(name: str, standin_dirs: dict[str, Path]) -> None:
    module = uni2ts_module(standin_dirs[name])
    expected = {"moirai": "MoiraiModule", "moirai-2": "Moirai2Module"}[name]
    assert type(module).__name__ == expected
    forecaster = load(standin_dirs[name])
    assert forecaster.variant == name
    assert forecaster.patch_size == 16
    assert forecaster.loss_name == {"moirai": "nll", "moirai-2": "quantile_loss"}[name]
    mine = forecaster.module.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in module.state_dict().items())
    assert {"config.json", "model.safetensors"} <= {p.name for p in standin_dirs[name].iterdir()}


@pytest.mark.parametrize("patch_size", [8, 16])
def test_engine_samples_equal_moirai_forecast_for_the_same_seed(
    patch_size: int, standin_dirs: dict[str, Path]
) -> None:
    """forecast_windows draws exactly what MoiraiForecast draws for each series alone under
    that series' own seed (the library sampler runs per series)."""
    forecaster = load(standin_dirs["moirai"], patch_size=patch_size)
    forecaster.sampler = "library"
    windows = toy_windows("test", n_stays=2)
    config = ForecastConfig(num_samples=12, batch_size=8, seed=3)
    frame = forecast_windows(forecaster, windows, VITALS, config, progress=False).table.to_pandas()
    net = uni2ts_forecast(
        standin_dirs["moirai"], 24, patch_size=patch_size, num_samples=config.num_samples
    )
    for vital in VITALS:
        rows = usable_rows(windows, vital)
        seeds = series_seeds(
            config.seed,
            windows.window_icustay_ids()[rows],
            windows.window_start_seconds()[rows],
            [vital] * len(rows),
        )
        drawn = []
        for row, seed in zip(rows, seeds, strict=True):
            inputs = uni2ts_inputs(net, windows.context(vital, np.array([row])))
            torch.manual_seed(int(seed))
            with torch.no_grad():
                drawn.append(net(**inputs))
        samples = torch.cat(drawn)
        assert samples.shape == (len(rows), config.num_samples, 12)
        mine = frame[frame.vital == vital].sort_values(["window_id", "step"])
        assert mine.window_id.unique().tolist() == rows.tolist()
        median = samples.quantile(0.5, dim=1).numpy().reshape(-1)
        np.testing.assert_allclose(mine["median"].to_numpy(), median, rtol=1e-6)
        q90 = torch.quantile(samples.double(), 0.9, dim=1).float().numpy().reshape(-1)
        np.testing.assert_allclose(mine["q0.9"].to_numpy(), q90, rtol=1e-6)


def test_predict_pads_leading_gaps_as_gluonts_pads_short_series(
    standin_dirs: dict[str, Path],
) -> None:
    contexts = holed_contexts()
    net = uni2ts_forecast(standin_dirs["moirai"], 24, patch_size=8, num_samples=10)
    torch.manual_seed(5)
    with torch.no_grad():
        library = net(**uni2ts_inputs(net, contexts))
    forecaster = load(standin_dirs["moirai"], patch_size=8)  # building a module draws
    forecaster.sampler = "library"
    torch.manual_seed(5)
    mine = forecaster.predict(torch.from_numpy(contexts), 12, 10)
    assert torch.equal(mine.samples, library)


@pytest.mark.parametrize("patch_size", [8, 32])
def test_fast_sampler_draws_from_the_same_distribution(
    patch_size: int, standin_dirs: dict[str, Path]
) -> None:
    """The fast sampler's distribution is MoiraiForecast's, restricted to the horizon."""
    forecaster = load(standin_dirs["moirai"], patch_size=patch_size)
    context = torch.from_numpy(holed_contexts()[:4])
    inputs = moirai_inputs(context)
    net = forecaster._net
    with torch.no_grad(), net.hparams_context(context_length=24, prediction_length=12):
        full = net._get_distr(patch_size, *inputs)
        restricted = forecaster._distribution(*forecaster._horizon_parameters(*inputs, patch_size))
        first = net.context_token_length(patch_size)
        tokens = net.prediction_token_length(patch_size)
        values = 80 + 10 * torch.randn(restricted.batch_shape)
        padded = torch.zeros(full.batch_shape)
        padded[:, first : first + tokens, :patch_size] = values
        expected = full.log_prob(padded)[:, first : first + tokens, :patch_size]
        torch.testing.assert_close(restricted.log_prob(values), expected)
    draws = {}
    for sampler, seed in (("fast", 0), ("library", 0), ("library", 1)):
        forecaster.sampler = sampler
        torch.manual_seed(seed)
        draws[sampler, seed] = forecaster.predict(context, 12, 1000).samples
    assert not torch.equal(draws["fast", 0], draws["library", 0])
    levels = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    quantiles = {key: torch.quantile(d.double(), levels, dim=1) for key, d in draws.items()}
    noise = (quantiles["library", 0] - quantiles["library", 1]).abs().mean()
    difference = (quantiles["fast", 0] - quantiles["library", 0]).abs().mean()
    assert difference < 2 * noise  # within the sampling noise between two library runs


def test_moirai2_quantiles_equal_moirai2_forecast(standin_dirs: dict[str, Path]) -> None:
    contexts = holed_contexts()
    net = uni2ts_forecast(standin_dirs["moirai-2"], 24)
    with torch.no_grad():
        library = net(**uni2ts_inputs(net, contexts))  # [B, 9, 12]
    forecast = load(standin_dirs["moirai-2"]).predict(torch.from_numpy(contexts), 12, 1)
    assert forecast.quantile_levels == tuple(net.module.quantile_levels)
    torch.testing.assert_close(forecast.quantiles, library, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(forecast.median, library[:, 4])
    # longer horizons go through Moirai2Forecast's recursive multi-quantile decoding
    long = load(standin_dirs["moirai-2"]).predict(torch.from_numpy(contexts), 80, 1)
    assert long.quantiles.shape == (len(contexts), 9, 80)
    assert torch.isfinite(long.quantiles).all()


@pytest.mark.parametrize("horizon", [1, 12, 64, 65])
def test_moirai2_context_tokens_alone_give_the_forward_quantiles(
    horizon: int, standin_dirs: dict[str, Path]
) -> None:
    """Up to num_predict_token patches (64 steps) the engine runs the context tokens only;
    Moirai2Forecast.forward runs the horizon tokens too and discards their outputs. Equal up
    to float rounding (the attention sums over fewer masked keys)."""
    forecaster = load(standin_dirs["moirai-2"])
    contexts = torch.from_numpy(holed_contexts())
    with (
        torch.no_grad(),
        forecaster._net.hparams_context(prediction_length=horizon, context_length=24),
    ):
        library = forecaster._net(*moirai2_inputs(contexts))
    mine = forecaster.predict(contexts, horizon, 1).quantiles
    assert mine.shape == library.shape == (len(contexts), 9, horizon)
    torch.testing.assert_close(mine, library, rtol=1e-6, atol=1e-4)


def toy_batch(n: int = 16) -> SeriesBatch:
    windows = toy_windows("train")
    rows = usable_rows(windows, "mbp")[:n]
    context = torch.from_numpy(windows.context("mbp", rows).astype(np.float32))
    target = torch.from_numpy(windows.horizon("mbp", rows).astype(np.float32))
    context[0, :9] = float("nan")  # padding
    target[1, 3:7] = float("nan")  # not scored
    return SeriesBatch(context, target)


def test_nll_equals_uni2ts_packed_nll_loss(standin_dirs: dict[str, Path]) -> None:
    from uni2ts.loss.packed import PackedNLLLoss

    batch = toy_batch()
    forecaster = load(standin_dirs["moirai"], patch_size=8)
    mine = forecaster.loss(batch)

    net = uni2ts_forecast(standin_dirs["moirai"], 24, patch_size=8)
    past = uni2ts_inputs(net, batch.context.numpy())
    observed = torch.isfinite(batch.target)
    packed = net._convert(
        8,
        past_target=past["past_target"],
        past_observed_target=past["past_observed_target"],
        past_is_pad=past["past_is_pad"],
        future_target=torch.nan_to_num(batch.target, nan=0.0)[..., None],
        future_observed_target=observed[..., None],
        future_is_pad=torch.zeros_like(observed),
    )
    target, observed_mask, sample_id, time_id, variate_id, prediction_mask = packed
    with torch.no_grad():
        distr = net.module(*packed, torch.full_like(time_id, 8))
    reference = PackedNLLLoss()(
        pred=distr,
        target=target,
        prediction_mask=prediction_mask,
        observed_mask=observed_mask,
        sample_id=sample_id,
        variate_id=variate_id,
    )
    torch.testing.assert_close(mine, reference)
    assert mine.requires_grad and torch.isfinite(mine)


def forecast_pinball(forecaster: MoiraiForecaster, batch: SeriesBatch) -> torch.Tensor:
    """[B, H] 2 x the level-averaged pinball loss of the forecast's quantiles, NaN where the
    target is missing."""
    forecast = forecaster.predict(batch.context, 12, 1)
    levels = torch.tensor(forecast.quantile_levels).view(1, -1, 1)
    error = batch.target.unsqueeze(1) - forecast.quantiles
    return 2 * torch.maximum(levels * error, (levels - 1) * error).mean(dim=1)


def test_moirai2_loss_is_the_relative_crps_of_its_forecast(standin_dirs: dict[str, Path]) -> None:
    """For a one-patch horizon the objective is the forecast's pinball loss (2 x, averaged
    over the levels: the study's CRPS approximation) divided by the context's mean absolute
    value, pooled over observed points."""
    batch = toy_batch()
    forecaster = load(standin_dirs["moirai-2"])
    mine = forecaster.loss(batch)
    pinball = forecast_pinball(forecaster, batch)
    level = torch.from_numpy(np.nanmean(np.abs(batch.context.numpy()), axis=1))
    observed = torch.isfinite(batch.target)
    expected = (pinball / level[:, None])[observed].mean()
    torch.testing.assert_close(mine.detach(), expected, rtol=1e-4, atol=1e-7)


def flat_context_batch() -> SeriesBatch:
    """The toy batch with row 2's context a single reading (a constant context)."""
    batch = toy_batch()
    context = batch.context.clone()
    context[2] = float("nan")
    context[2, -3] = float(batch.target[2, 0]) + 4.0  # a few units off its horizon
    return SeriesBatch(context, batch.target)


def test_moirai2_constant_context_no_longer_dominates_the_loss(
    standin_dirs: dict[str, Path],
) -> None:
    """uni2ts's scaler divides errors by the context's standard deviation (floored at ~0.003):
    a single-reading context made ~87 % of the mean loss on the default study. Relative to the
    context's level its share stays near its share of the points."""
    batch = flat_context_batch()
    forecaster = load(standin_dirs["moirai-2"])
    observed = torch.isfinite(batch.target)
    pinball = torch.where(observed, forecast_pinball(forecaster, batch), 0.0)
    # what the std-scaled objective weighs each series by (uni2ts's PackedStdScaler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one reading: no variance
        std = np.nan_to_num(np.nanvar(batch.context.double().numpy(), axis=1, ddof=1))
    by_std = pinball.sum(1) / torch.from_numpy(np.sqrt(std + 1e-5)).float()
    assert by_std[2] / by_std.sum() > 0.9  # the old objective: one series is the loss
    per_series = []
    for row in range(len(batch)):  # the pooled loss is the point-weighted mean of these
        one = batch[row : row + 1]
        per_series.append(float(forecaster.loss(one).detach()) * int(observed[row].sum()))
    share = per_series[2] / sum(per_series)
    points_share = float(observed[2].sum() / observed.sum())
    assert share < 3 * points_share
    total = float(forecaster.loss(batch).detach())
    assert total == pytest.approx(sum(per_series) / int(observed.sum()), rel=1e-5)


@pytest.mark.parametrize("factor", [0.01, 3.7, 1000.0])
def test_moirai2_loss_does_not_depend_on_the_units(
    factor: float, standin_dirs: dict[str, Path]
) -> None:
    batch = flat_context_batch()
    forecaster = load(standin_dirs["moirai-2"])
    loss = forecaster.loss(batch).detach()
    rescaled = SeriesBatch(batch.context * factor, batch.target * factor)
    # up to the scaler's absolute floor (sqrt(1e-5) on the standard deviation)
    torch.testing.assert_close(forecaster.loss(rescaled).detach(), loss, rtol=2e-3, atol=0)
    row = SeriesBatch(batch.context[:1] * factor, batch.target[:1] * factor)
    torch.testing.assert_close(
        forecaster.loss(row).detach(), forecaster.loss(batch[:1]).detach(), rtol=2e-3, atol=0
    )


@pytest.mark.parametrize("name", STANDINS)
def test_loss_trains_on_pretraining_batches_with_blanked_contexts(
    name: str, standin_dirs: dict[str, Path]
) -> None:
    corpus = generate_corpus(CorpusConfig(n_series=64, length=96, seed=1))
    data = CorpusTrainingData(corpus, min_context=16, max_context=64, horizon=12, seed=0)
    forecaster = MoiraiForecaster.standin(name, horizon=12, seed=0)
    forecaster.module.train()
    batch = data.train_batch(0, 32)
    assert torch.isnan(batch.context[:, 0]).any()
    forecaster.module.requires_grad_(True)
    losses = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)  # as the Trainer does before each step
        loss = forecaster.loss(batch)
        loss.backward()
        losses.append(float(loss.detach()))
        grads = [p.grad for p in forecaster.module.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        forecaster.module.zero_grad()
    assert losses[0] == losses[1] and np.isfinite(losses).all()
    if name == "moirai":  # stand-ins pretrain every patch size: validation averages them
        forecaster.module.eval()
        with torch.no_grad():
            mean = forecaster.loss(batch)
            each = [forecaster._nll(batch, size) for size in forecaster.patch_sizes]
        torch.testing.assert_close(mean, torch.stack(each).mean())


def test_patch_size_option(standin_dirs: dict[str, Path]) -> None:
    with pytest.raises(ModelError, match=r"patch_size 12 .*\(8, 16, 32, 64, 128\)"):
        load(standin_dirs["moirai"], patch_size=12)
    with pytest.raises(ModelError, match=r"patch sizes \(16\)"):
        load(standin_dirs["moirai-2"], patch_size=8)
    with pytest.raises(ModelError, match="has no option"):
        load(standin_dirs["moirai"], context_length=24)
    assert load(standin_dirs["moirai-2"], patch_size="auto").patch_size == 16

    forecaster = load(standin_dirs["moirai"], patch_size="auto")
    forecaster.sampler = "library"
    assert forecaster.describe()["patch_size"] == "auto"
    context = torch.from_numpy(holed_contexts())
    torch.manual_seed(1)
    auto = forecaster.predict(context, 12, 6).samples
    # uni2ts's "auto" order, size by size: the validation NLL (the mixture's log_prob draws
    # too), then the paths
    torch.manual_seed(1)
    losses, paths = [], []
    for size in forecaster.patch_sizes:
        with forecaster._net.hparams_context(context_length=12, prediction_length=12):
            losses.append(forecaster._net._val_loss(size, *moirai_inputs(context)))
        paths.append(forecaster._sample(context, 12, 6, size))
    losses, fixed = torch.stack(losses), torch.stack(paths)
    chosen = losses.argmin(dim=0)
    assert len(set(chosen.tolist())) > 1  # the choice is per series
    assert torch.equal(auto, fixed[chosen, torch.arange(len(context))])
    with pytest.raises(ModelError, match="longer than the horizon"):
        forecaster.predict(context[:, :12], 12, 6)


def test_unknown_hub_id_offline_says_how_to_use_a_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as err:
        MoiraiForecaster.load(ModelSource(hub="Salesforce/moirai-1.1-R-nonexistent"), CPU)
    assert "source: {path: <folder>}" in str(err.value)
    assert "`hf download" in str(err.value)


def test_local_folder_with_missing_foreign_or_broken_files(
    tmp_path: Path, standin_dirs: dict[str, Path]
) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load(tmp_path / "absent")

    def folder(name: str, config: dict | str, weights: bytes | None) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        if weights is not None:
            (path / "model.safetensors").write_bytes(weights)
        return path

    config = json.loads((standin_dirs["moirai"] / "config.json").read_text())
    weights = (standin_dirs["moirai"] / "model.safetensors").read_bytes()
    with pytest.raises(ModelError, match=r"lacks model\.safetensors"):
        load(folder("partial", config, None))
    chronos = {"model_type": "t5", "d_model": 64, "chronos_config": {"n_tokens": 4096}}
    with pytest.raises(ModelError, match=r"not a MOIRAI checkpoint .*Chronos"):
        load(folder("chronos", chronos, b""))
    with pytest.raises(ModelError, match="d_ff that MoiraiModule does not take"):
        load(folder("moe", {**config, "d_ff": 512}, weights))
    with pytest.raises(ModelError, match=r"config\.json is unreadable"):
        load(folder("garbled", "{not json", weights))
    with pytest.raises(ModelError, match="cannot load the moirai checkpoint"):
        load(folder("shapes", {**config, "d_model": 128}, weights))
    with pytest.raises(ModelError, match="cannot load the moirai checkpoint"):
        load(folder("truncated", config, weights[:1000]))
    moirai2 = json.loads((standin_dirs["moirai-2"] / "config.json").read_text())
    with pytest.raises(ModelError, match="cannot load the moirai-2 checkpoint"):
        load(folder("crossed", moirai2, weights))  # a Moirai-2 config over MOIRAI 1.x weights


def train_briefly(forecaster: MoiraiForecaster, tmp_path: Path, steps: int, lr: float) -> object:
    data = WindowTrainingData(
        toy_windows(), toy_windows("validation", seed=1), VITALS, seed=0, validation_max_series=32
    )
    config = TrainingConfig(max_steps=steps, batch_size=16, learning_rate=lr, eval_every=steps)
    return Trainer(forecaster, data, config, CPU, tmp_path, fingerprint={}, progress=False).fit()


def test_lora_training_leaves_base_weights_bit_identical(
    standin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    forecaster = load(standin_dirs["moirai"])
    base = {k: v.clone() for k, v in forecaster.module.state_dict().items()}
    spec = MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16, dropout=0.05)
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    assert forecaster._net.module is forecaster.module
    train_briefly(forecaster, tmp_path, steps=3, lr=1e-2)
    after = {
        k.replace(".base_layer", ""): v
        for k, v in forecaster.module.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert after.keys() == base.keys()
    assert [k for k in base if not torch.equal(base[k], after[k])] == []
    lora = [n for n, p in forecaster.module.named_parameters() if p.requires_grad]
    assert len(lora) == 2 * 4 * 2  # A and B on q, k, v, out_proj of 2 layers
    assert all("self_attn" in n for n in lora)
    assert any("lora_B" in k and p.abs().sum() > 0 for k, p in forecaster.module.named_parameters())
    merged = merge_for_inference(forecaster.module)
    assert type(merged).__name__ == "MoiraiModule"
    forecaster.set_module(merged)
    assert forecaster._net.module is merged
    assert torch.isfinite(forecaster.predict(toy_batch().context, 12, 4).median).all()


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("moirai", MethodSpec(name="dora-r2", kind="dora", rank=2, alpha=16)),
        ("moirai-2", MethodSpec(name="lora-r2", kind="lora", rank=2, alpha=16)),
        ("moirai-2", MethodSpec(name="bitfit", kind="bitfit")),
    ],
)
def test_adapter_round_trip_gives_identical_forecasts(
    name: str, spec: MethodSpec, standin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    forecaster = load(standin_dirs[name])
    forecaster.set_module(adapt(forecaster.module, spec, forecaster.target_modules()))
    train_briefly(forecaster, tmp_path / "ck", steps=3, lr=1e-2)
    save_adapted(forecaster.module, spec, tmp_path / "adapter")
    forecaster.set_module(merge_for_inference(forecaster.module))
    context = torch.from_numpy(toy_windows("test").context("mbp"))

    def forecast(model: MoiraiForecaster) -> torch.Tensor:
        torch.manual_seed(0)
        out = model.predict(context, 12, 8)
        return out.samples if out.samples is not None else out.quantiles

    trained = forecast(forecaster)
    reloaded = load(standin_dirs[name])
    merged = load_adapted(reloaded.module, spec, tmp_path / "adapter")
    reloaded.set_module(merged)
    torch.testing.assert_close(forecast(reloaded), trained, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(forecast(load(standin_dirs[name])), trained)


@pytest.mark.parametrize("name", STANDINS)
def test_layernorm_tunes_the_attention_norms(name: str, standin_dirs: dict[str, Path]) -> None:
    forecaster = load(standin_dirs[name])
    spec = MethodSpec(name="layernorm", kind="layernorm")
    module = adapt(forecaster.module, spec, forecaster.target_modules())
    trained = sorted(n for n, p in module.named_parameters() if p.requires_grad)
    assert trained == sorted(
        f"encoder.layers.{i}.{norm}.weight"
        for i in range(2)
        for norm in ("norm1", "self_attn.q_norm", "self_attn.k_norm")
    )
    forecaster.module.train()
    forecaster.loss(toy_batch()).backward()
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0
        for n, p in module.named_parameters()
        if n in trained
    )


@pytest.mark.parametrize("name", STANDINS)
def test_brief_training_beats_zero_shot_validation_loss(
    name: str, standin_dirs: dict[str, Path], tmp_path: Path
) -> None:
    forecaster = load(standin_dirs[name])
    result = train_briefly(forecaster, tmp_path, steps=20, lr=3e-3)
    assert result.best_validation_loss < result.initial_validation_loss


@pytest.fixture(scope="module")
def window_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return toy_window_files(tmp_path_factory.mktemp("windows"))


@pytest.mark.parametrize(
    ("standin", "options"),
    [("moirai", {"patch_size": 8}), ("moirai-2", {})],
)
def test_every_method_runs_end_to_end(
    standin: str,
    options: dict,
    standin_dirs: dict[str, Path],
    window_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    cfg = tiny_study_config("moirai", standin, options, vitals=VITALS)
    results = run_every_setting(cfg, every_setting(), window_files, standin_dirs[standin], tmp_path)
    for setting, (trained, _) in results.items():
        if trained is not None:
            assert trained["patch_size"] == options.get("patch_size", 16), setting
    assert results["full"][1]["options"] == options
    assert (tmp_path / "runs" / "full" / "model" / "config.json").is_file()


def test_to_quantiles_of_moirai2_forecast_keeps_its_levels(standin_dirs: dict[str, Path]) -> None:
    forecast = load(standin_dirs["moirai-2"]).predict(toy_batch().context, 12, 1)
    wanted = to_quantiles(forecast, (0.05, 0.1, 0.5, 0.9))
    assert torch.isnan(wanted[:, 0]).all()
    torch.testing.assert_close(wanted[:, 1:], forecast.quantiles[:, [0, 4, 8]])
