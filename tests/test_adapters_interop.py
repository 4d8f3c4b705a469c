"""Adapters trained elsewhere are a model source: a peft folder written by chronos-forecasting's
own ``Chronos2Pipeline.fit`` forecasts in the study exactly as upstream's pipeline loads it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vitalfm.config import validate_config
from vitalfm.errors import ConfigError
from vitalfm.models.base import ModelError, ModelSource
from vitalfm.models.chronos import ChronosForecaster
from vitalfm.steps.models import load_base
from vitalfm.study import study_runs

CPU = torch.device("cpu")


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Chronos-2 base folder, and a LoRA adapter that ``Chronos2Pipeline.fit`` trained on it
    and saved (adapter_config.json + adapter_model.safetensors, no base weights)."""
    from chronos import Chronos2Pipeline

    root = tmp_path_factory.mktemp("fit")
    base = root / "base"
    ChronosForecaster.standin("chronos-2", horizon=12, seed=0).save_pretrained(base)
    pipeline = Chronos2Pipeline.from_pretrained(str(base))
    rng = np.random.default_rng(0)
    series = [80 + rng.normal(0, 5, 96).cumsum() / 4 for _ in range(16)]
    torch.manual_seed(0)
    pipeline.fit(
        [torch.tensor(s, dtype=torch.float32) for s in series],
        prediction_length=12,
        finetune_mode="lora",
        learning_rate=1e-2,  # a visible change in a few steps
        num_steps=4,
        batch_size=8,
        output_dir=root / "out",
        remove_printer_callback=True,
        report_to="none",
    )
    adapter = root / "out" / "finetuned-ckpt"
    return {"base": base, "adapter": adapter}


def contexts(rows: int = 6, length: int = 40) -> torch.Tensor:
    rng = np.random.default_rng(1)
    values = 80 + rng.normal(0, 5, (rows, length)).cumsum(axis=1) / 3
    values[rng.random(values.shape) < 0.1] = np.nan
    return torch.tensor(values, dtype=torch.float32)


def study_model(source: dict[str, str]) -> ChronosForecaster:
    """The model of a zero-shot run whose config entry has ``source``, as the study loads it."""
    config = {
        "models": {"fitted": {"family": "chronos", "source": source, "methods": ["zero_shot"]}},
        "methods": {"zero_shot": {"kind": "zero_shot"}},
    }
    (run,) = study_runs(validate_config(config), oracle=False)
    return load_base(run, None, CPU)


def test_fit_writes_an_adapter_folder_without_base_weights(fitted: dict[str, Path]) -> None:
    files = {p.name for p in fitted["adapter"].iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files
    assert not files & {"model.safetensors", "config.json", "pytorch_model.bin"}
    config = json.loads((fitted["adapter"] / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == str(fitted["base"])


def test_an_adapter_from_chronos2_fit_forecasts_as_upstreams_pipeline(
    fitted: dict[str, Path],
) -> None:
    from chronos import Chronos2Pipeline

    upstream = Chronos2Pipeline.from_pretrained(str(fitted["adapter"]))
    mine = study_model({"adapter": str(fitted["adapter"])})
    assert mine.source.describe() == f"adapter:{fitted['adapter']} on path:{fitted['base']}"
    context = contexts()
    theirs = torch.cat(upstream.predict(context[:, None], prediction_length=12))
    ours = mine.predict(context, 12, 0).quantiles
    assert torch.equal(ours, theirs)
    base_only = study_model({"path": str(fitted["base"])}).predict(context, 12, 0).quantiles
    assert not torch.equal(base_only, ours)  # the adapter changed the forecasts


def test_the_base_can_be_given_beside_the_adapter(fitted: dict[str, Path], tmp_path: Path) -> None:
    """An adapter whose recorded base does not resolve here (a relative path, another
    machine's folder) loads with ``base:``; without it, the error says to give one."""
    moved = tmp_path / "adapter"
    moved.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (moved / name).write_bytes((fitted["adapter"] / name).read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "results/models/elsewhere/chronos-2"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"(?s)neither a local folder nor a hub id.*base:"):
        study_model({"adapter": str(moved)})
    given = study_model({"adapter": str(moved), "base": str(fitted["base"])})
    recorded = study_model({"adapter": str(fitted["adapter"])})
    context = contexts()
    assert torch.equal(
        given.predict(context, 12, 0).quantiles, recorded.predict(context, 12, 0).quantiles
    )


def test_bad_adapter_sources_get_one_clear_message(fitted: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"adapter folder .* does not exist"):
        study_model({"adapter": str(tmp_path / "nothing")})
    with pytest.raises(ModelError, match=r"lacks adapter_model\.safetensors"):
        (tmp_path / "half").mkdir()
        (tmp_path / "half" / "adapter_config.json").write_text("{}")
        study_model({"adapter": str(tmp_path / "half")})
    with pytest.raises(ConfigError, match="base only beside adapter"):
        ModelSource.from_config({"path": str(fitted["base"]), "base": "x/y"})
    other = tmp_path / "t5"
    ChronosForecaster.standin("chronos-t5", horizon=12, seed=0).save_pretrained(other)
    with pytest.raises(ModelError, match=r"holds a chronos-t5 checkpoint|does not fit its base"):
        study_model({"adapter": str(fitted["adapter"]), "base": str(other)})
