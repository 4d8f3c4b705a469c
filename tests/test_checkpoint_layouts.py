"""Checkpoints in every layout researchers have: sharded safetensors with an index,
``pytorch_model.bin``, bf16 weights and a Hugging Face cache folder (``HF_HOME``, offline) all
load through the project's loaders and forecast as the plain ``model.safetensors`` save of the
same weights; the dtype a checkpoint is loaded in, and its record in the run metadata.

Every layout is written by the libraries' own writers: transformers' ``save_pretrained`` (Chronos,
sharded with ``max_shard_size``), the uni2ts modules' ``save_pretrained`` (huggingface_hub's
``PyTorchModelHubMixin``: ``model.safetensors`` only, it cannot shard), and huggingface_hub's
``save_torch_model`` for what those cannot write (sharded MOIRAI; ``pytorch_model.bin``, which
transformers 5 no longer writes).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vitalfm.models import checkpoints
from vitalfm.models.base import Forecaster, ModelError, ModelSource
from vitalfm.models.chronos import ChronosForecaster
from vitalfm.models.lag_llama import LagLlamaForecaster
from vitalfm.models.moirai import MoiraiForecaster
from vitalfm.testing import hf_cache_from_folder

CPU = torch.device("cpu")
FAMILIES: dict[str, type[Forecaster]] = {
    "chronos-t5": ChronosForecaster,
    "chronos-bolt": ChronosForecaster,
    "chronos-2": ChronosForecaster,
    "moirai": MoiraiForecaster,
    "moirai-2": MoiraiForecaster,
}
LAYOUTS = ("sharded", "bin", "bf16")
SHARD_SIZE = "100KB"  # the stand-ins are a few MB: several shards each
HUB_ORG = "vitalfm-test"


#: Tiny models: one torch thread (see tests/conftest.py, one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def is_chronos(name: str) -> bool:
    return FAMILIES[name] is ChronosForecaster


def save_plain(module: torch.nn.Module, folder: Path) -> None:
    """config.json + model.safetensors, by the library's own save_pretrained."""
    module.save_pretrained(folder)


def save_layout(module: torch.nn.Module, folder: Path, layout: str, chronos: bool) -> None:
    from huggingface_hub import save_torch_model

    if layout == "bf16":
        save_plain(copy.deepcopy(module).to(torch.bfloat16), folder)
        return
    if chronos and layout == "sharded":
        module.save_pretrained(folder, max_shard_size=SHARD_SIZE)
        return
    # The config by the library's own writer, then the weights by huggingface_hub's.
    if chronos:
        module.config.save_pretrained(folder)
    else:
        save_plain(module, folder)  # the mixin writes config.json with model.safetensors
        (folder / checkpoints.SAFETENSORS_FILE).unlink()
    if layout == "sharded":
        save_torch_model(module, folder, max_shard_size=SHARD_SIZE)
    else:
        save_torch_model(module, folder, safe_serialization=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Each stand-in saved plain and in every layout; ``bf16-plain`` is the plain save of the
    bf16 weights upcast (what a bf16 checkpoint must forecast like when loaded in float32)."""
    root = tmp_path_factory.mktemp("layouts")
    folders = {}
    for name, family in FAMILIES.items():
        module = family.standin(name, horizon=12, seed=0).module
        for layout in ("plain", *LAYOUTS, "bf16-plain"):
            folder = root / name / layout
            if layout == "plain":
                save_plain(module, folder)
            elif layout == "bf16-plain":
                save_plain(copy.deepcopy(module).to(torch.bfloat16).float(), folder)
            else:
                save_layout(module, folder, layout, is_chronos(name))
            folders[name, layout] = folder
    return folders


def load(name: str, source: ModelSource, device: torch.device = CPU) -> Forecaster:
    return FAMILIES[name].load(source, device)


def forecast(forecaster: Forecaster) -> torch.Tensor:
    """Forecasts of three fixed contexts (samples drawn from one seed)."""
    generator = torch.Generator().manual_seed(1)
    context = 80 + 10 * torch.randn(3, 48, generator=generator)
    context[1, :5] = float("nan")
    torch.manual_seed(0)
    out = forecaster.predict(context, horizon=12, num_samples=8)
    return out.samples if out.samples is not None else out.quantiles


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_layout_forecasts_as_the_plain_save(
    name: str, layout: str, saved: dict[tuple[str, str], Path]
) -> None:
    folder = saved[name, layout]
    files = {p.name for p in folder.iterdir()}
    if layout == "sharded":
        shards = checkpoints.shard_names(folder / checkpoints.SAFETENSORS_INDEX)
        assert len(shards) > 1 and set(shards) <= files
        assert checkpoints.SAFETENSORS_FILE not in files
    elif layout == "bin":
        assert checkpoints.PICKLE_FILE in files
        assert not any(f.endswith((".safetensors", ".index.json")) for f in files)
    forecaster = load(name, ModelSource(path=str(folder)))
    reference = load(
        name, ModelSource(path=str(saved[name, "bf16-plain" if layout == "bf16" else "plain"]))
    )
    assert type(forecaster) is type(reference) and forecaster.variant == name
    # held and run in float32 on CPU, whatever the checkpoint stores
    assert {p.dtype for p in forecaster.module.parameters()} == {torch.float32}
    stored = "bfloat16" if layout == "bf16" else "float32"
    described = forecaster.describe()
    assert (described["dtype"], described["checkpoint_dtype"]) == ("float32", stored)
    assert torch.equal(forecast(forecaster), forecast(reference))


def test_bf16_checkpoints_differ_from_the_float32_ones(saved: dict[tuple[str, str], Path]) -> None:
    """The bf16 comparisons above can fail: rounding to bf16 changes the forecasts."""
    for name in ("chronos-bolt", "moirai-2"):
        plain = load(name, ModelSource(path=str(saved[name, "plain"])))
        rounded = load(name, ModelSource(path=str(saved[name, "bf16"])))
        assert not torch.equal(forecast(plain), forecast(rounded))


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HF_HOME, with the hub unreachable (HF_HUB_OFFLINE=1), in this process."""
    import huggingface_hub.constants as constants

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home


@pytest.mark.parametrize("layout", ["plain", "sharded", "bin"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_hub_ids_resolve_from_an_offline_cache(
    name: str, layout: str, saved: dict[tuple[str, str], Path], offline_cache: Path
) -> None:
    from huggingface_hub import scan_cache_dir

    repo = f"{HUB_ORG}/{name}-{layout}"
    snapshot = hf_cache_from_folder(saved[name, layout], offline_cache, repo)
    cached = {r.repo_id: r for r in scan_cache_dir(offline_cache / "hub").repos}
    (revision,) = cached[repo].revisions  # huggingface_hub reads the cache as one of its own
    assert revision.refs == {"main"} and revision.snapshot_path == snapshot
    assert {f.file_name for f in revision.files} == {p.name for p in saved[name, layout].iterdir()}
    forecaster = load(name, ModelSource(hub=repo))
    assert forecaster.describe()["source"] == f"hub:{repo}"
    reference = load(name, ModelSource(path=str(saved[name, "plain"])))
    assert torch.equal(forecast(forecaster), forecast(reference))


def test_hf_home_and_offline_from_the_environment(
    saved: dict[tuple[str, str], Path], tmp_path: Path
) -> None:
    """A fresh process with HF_HOME and HF_HUB_OFFLINE=1 set as a user sets them."""
    home = tmp_path / "hf_home"
    for name in ("chronos-bolt", "moirai"):
        hf_cache_from_folder(saved[name, "sharded"], home, f"{HUB_ORG}/{name}")
    script = (
        "import torch, json\n"
        "from vitalfm.models.base import ModelSource\n"
        "from vitalfm.models.chronos import ChronosForecaster\n"
        "from vitalfm.models.moirai import MoiraiForecaster\n"
        "out = {}\n"
        "for name, family in [('chronos-bolt', ChronosForecaster), ('moirai', MoiraiForecaster)]:\n"
        f"    f = family.load(ModelSource(hub='{HUB_ORG}/' + name), torch.device('cpu'))\n"
        "    out[name] = f.describe()['source']\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "chronos-bolt": f"hub:{HUB_ORG}/chronos-bolt",
        "moirai": f"hub:{HUB_ORG}/moirai",
    }


@pytest.mark.parametrize("name", ["chronos-bolt", "moirai"])
def test_incomplete_folders_name_the_missing_files(
    name: str, saved: dict[tuple[str, str], Path], tmp_path: Path, offline_cache: Path
) -> None:
    import shutil

    sharded = tmp_path / "sharded"
    shutil.copytree(saved[name, "sharded"], sharded)
    shards = checkpoints.shard_names(sharded / checkpoints.SAFETENSORS_INDEX)
    (sharded / shards[1]).unlink()
    with pytest.raises(ModelError, match=f"lacks the shard\\(s\\) {shards[1]} that") as err:
        load(name, ModelSource(path=str(sharded)))
    assert "`hf download" in str(err.value)
    (sharded / checkpoints.SAFETENSORS_INDEX).write_text("{")
    with pytest.raises(ModelError, match="is not a readable safetensors index"):
        load(name, ModelSource(path=str(sharded)))

    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(saved[name, "plain"] / checkpoints.CONFIG_FILE, no_weights)
    with pytest.raises(
        ModelError,
        match=r"lacks model\.safetensors \(or model\.safetensors\.index\.json with its shards, "
        r"or pytorch_model\.bin\)",
    ):
        load(name, ModelSource(path=str(no_weights)))
    no_config = tmp_path / "no_config"
    shutil.copytree(saved[name, "bin"], no_config)
    (no_config / checkpoints.CONFIG_FILE).unlink()
    with pytest.raises(ModelError, match=r"lacks config\.json"):
        load(name, ModelSource(path=str(no_config)))

    # a cache holding the config but no weights (an interrupted download), offline
    hf_cache_from_folder(no_weights, offline_cache, f"{HUB_ORG}/partial")
    with pytest.raises(
        ModelError,
        match=r"config\.json is in the local Hugging Face cache but none of model\.safetensors",
    ):
        load(name, ModelSource(hub=f"{HUB_ORG}/partial"))
    with pytest.raises(ModelError, match="not in the local Hugging Face cache") as err:
        load(name, ModelSource(hub=f"{HUB_ORG}/absent"))
    assert "HF_HUB_OFFLINE=1" in str(err.value) and "source: {path: <folder>}" in str(err.value)


# --- dtype ---------------------------------------------------------------------------------------


def test_load_dtype_rule() -> None:
    """float32 on CPU; on CUDA the checkpoint's own dtype where the library keeps it."""
    cuda, cpu, mps = torch.device("cuda"), torch.device("cpu"), torch.device("mps")
    bf16, fp32, fp16 = torch.bfloat16, torch.float32, torch.float16
    assert checkpoints.load_dtype(cpu, bf16, library_keeps_dtype=True) == fp32
    assert checkpoints.load_dtype(mps, bf16, library_keeps_dtype=True) == fp32
    assert checkpoints.load_dtype(cuda, bf16, library_keeps_dtype=True) == bf16
    assert checkpoints.load_dtype(cuda, fp16, library_keeps_dtype=True) == fp16
    assert checkpoints.load_dtype(cuda, fp32, library_keeps_dtype=True) == fp32
    assert checkpoints.load_dtype(cuda, None, library_keeps_dtype=True) == fp32
    assert checkpoints.load_dtype(cuda, bf16, library_keeps_dtype=False) == fp32
    assert ChronosForecaster.KEEPS_CHECKPOINT_DTYPE
    assert not MoiraiForecaster.KEEPS_CHECKPOINT_DTYPE
    assert not LagLlamaForecaster.KEEPS_CHECKPOINT_DTYPE


def test_config_dtype_reads_both_spellings() -> None:
    assert checkpoints.config_dtype({"dtype": "bfloat16"}) == torch.bfloat16
    assert checkpoints.config_dtype({"torch_dtype": "float32"}) == torch.float32
    assert checkpoints.config_dtype({"torch_dtype": "torch.float16"}) == torch.float16
    assert checkpoints.config_dtype({"dtype": "auto"}) is None
    assert checkpoints.config_dtype({"dtype": "int8"}) is None
    assert checkpoints.config_dtype({}) is None


def test_chronos_on_cuda_asks_the_library_for_the_checkpoint_dtype(
    saved: dict[tuple[str, str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a (faked) CUDA device a bf16 Chronos checkpoint is loaded in bf16, as
    chronos-forecasting's default dtype="auto" loads it; the record says so."""
    from chronos import BaseChronosPipeline

    original = BaseChronosPipeline.from_pretrained.__func__  # type: ignore[attr-defined]
    asked: list[dict[str, object]] = []

    def on_cpu(cls: type, location: object, **kwargs: object) -> object:
        asked.append(kwargs)
        return original(cls, location, **{**kwargs, "device_map": "cpu"})

    monkeypatch.setattr(BaseChronosPipeline, "from_pretrained", classmethod(on_cpu))
    cuda = torch.device("cuda")
    bf16 = ChronosForecaster.load(ModelSource(path=str(saved["chronos-bolt", "bf16"])), cuda)
    fp32 = ChronosForecaster.load(ModelSource(path=str(saved["chronos-bolt", "plain"])), cuda)
    assert [a["dtype"] for a in asked] == [torch.bfloat16, torch.float32]
    assert [a["device_map"] for a in asked] == ["cuda", "cuda"]
    assert bf16.describe()["dtype"] == bf16.describe()["checkpoint_dtype"] == "bfloat16"
    assert fp32.describe()["dtype"] == "float32"


def test_moirai_keeps_float32_as_uni2ts_does(saved: dict[tuple[str, str], Path]) -> None:
    """uni2ts's mixin builds the module in float32 and copies bf16 weights into it."""
    from uni2ts.model.moirai2 import Moirai2Module

    library = Moirai2Module.from_pretrained(saved["moirai-2", "bf16"])
    assert {p.dtype for p in library.parameters()} == {torch.float32}
    ours = MoiraiForecaster.load(ModelSource(path=str(saved["moirai-2", "bf16"])), CPU)
    for (key, mine), (_, theirs) in zip(
        ours.module.state_dict().items(), library.state_dict().items(), strict=True
    ):
        assert torch.equal(mine, theirs), key


def test_lag_llama_records_float32(tmp_path: Path) -> None:
    LagLlamaForecaster.standin("lag-llama", horizon=12, seed=0).save_pretrained(tmp_path)
    described = LagLlamaForecaster.load(ModelSource(path=str(tmp_path)), CPU).describe()
    assert (described["dtype"], described["checkpoint_dtype"]) == ("float32", "float32")


def test_models_built_here_record_no_checkpoint_dtype() -> None:
    described = ChronosForecaster.standin("chronos-bolt", horizon=12, seed=0).describe()
    assert (described["dtype"], described["checkpoint_dtype"]) == ("float32", None)
