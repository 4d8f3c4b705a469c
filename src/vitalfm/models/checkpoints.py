"""Hugging Face checkpoint folders: which weight layouts load, where a hub id's files are, and
the dtype a checkpoint is loaded in.

A released checkpoint is ``config.json`` plus its weights in one of three layouts, as
transformers and huggingface_hub write them:

- ``model.safetensors`` (one file);
- ``model.safetensors.index.json`` and the shards its ``weight_map`` names (a sharded save);
- ``pytorch_model.bin`` (a pickled state dict; read with torch's restricted unpickler).

A hub id is resolved to its snapshot folder in the Hugging Face cache (``HF_HOME``; with
``HF_HUB_OFFLINE=1`` from the cache only) by huggingface_hub's own ``hf_hub_download``, so hub
and local sources are checked and loaded by the same code.

The dtype rule (:func:`load_dtype`): float32 on CPU; on a CUDA device, the dtype the family's
library loads the checkpoint in by default: chronos-forecasting loads a checkpoint in its own
dtype (``dtype="auto"``: the config's ``dtype``/``torch_dtype``, bf16 for some releases), while
uni2ts (PyTorchModelHubMixin) and Lag-Llama build the network in float32 and copy the stored
weights into it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from vitalfm.models.base import ModelError, dominant_dtype

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE_FILE = "pytorch_model.bin"
#: The weight layouts, in the order the loaders prefer them (as transformers does).
WEIGHT_LAYOUTS = (SAFETENSORS_FILE, SAFETENSORS_INDEX, PICKLE_FILE)
WEIGHTS_WANTED = f"{SAFETENSORS_FILE} (or {SAFETENSORS_INDEX} with its shards, or {PICKLE_FILE})"

_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


# --- layouts -----------------------------------------------------------------------------------


def shard_names(index_file: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names (its weight_map's values)."""
    try:
        index = json.loads(index_file.read_text())
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(
            f"{index_file} is not a readable safetensors index ({type(err).__name__}: {err})",
            "copy the checkpoint's model.safetensors.index.json again (a download or copy was "
            "cut short, or the file was edited by hand)",
        ) from None
    return sorted(set(map(str, weight_map.values())))


def check_folder(path: Path, example_repo: str) -> str:
    """The weight layout of a local checkpoint folder (one of :data:`WEIGHT_LAYOUTS`).

    ModelError naming every missing file (config.json, the weights, shards the index lists)
    and how to get a complete copy.
    """
    fix = (
        "copy the complete checkpoint there (e.g. `hf download "
        f"{example_repo} --local-dir <folder>` on a machine with internet)"
    )
    if not path.is_dir():
        raise ModelError(
            f"model folder {path} does not exist",
            f"point `source: {{path: ...}}` at a folder holding {CONFIG_FILE} and {WEIGHTS_WANTED}",
        )
    missing = [] if (path / CONFIG_FILE).is_file() else [CONFIG_FILE]
    layout = next((name for name in WEIGHT_LAYOUTS if (path / name).is_file()), None)
    if layout is None:
        missing.append(WEIGHTS_WANTED)
    elif layout == SAFETENSORS_INDEX:
        shards = [s for s in shard_names(path / SAFETENSORS_INDEX) if not (path / s).is_file()]
        if shards:
            missing.append(f"the shard(s) {', '.join(shards)} that {SAFETENSORS_INDEX} lists")
    if missing:
        raise ModelError(f"model folder {path} lacks {' and '.join(missing)}", fix)
    assert layout is not None
    return layout


# --- hub ids -----------------------------------------------------------------------------------


NOT_CACHED = "is not in the local Hugging Face cache and the hub cannot be reached or has"


def hub_error(repo: str, err: BaseException | None, detail: str) -> ModelError:
    why = f" ({type(err).__name__})" if err is not None else ""
    return ModelError(
        f"cannot load hub model {repo!r}: {detail}{why}",
        "check the id; offline, download it elsewhere (`hf download "
        f"{repo} --local-dir <folder>`) and set `source: {{path: <folder>}}`, or copy that "
        "machine's Hugging Face cache (HF_HOME) here and set HF_HUB_OFFLINE=1",
    )


def resolve_hub(repo: str) -> Path:
    """The snapshot folder of hub model ``repo`` in the Hugging Face cache, holding its
    config.json and its weights in the first layout of :data:`WEIGHT_LAYOUTS` it has.

    Files come from the cache (``HF_HOME``) and, unless ``HF_HUB_OFFLINE=1``, from the hub,
    through huggingface_hub's ``hf_hub_download``.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    try:
        folder = Path(hf_hub_download(repo_id=repo, filename=CONFIG_FILE)).parent
    except (OSError, ValueError, HfHubHTTPError) as err:
        raise hub_error(repo, err, f"it {NOT_CACHED} no such model") from None
    for layout in WEIGHT_LAYOUTS:
        try:
            hf_hub_download(repo_id=repo, filename=layout)
        except EntryNotFoundError:
            continue  # not in the cache (offline) or not in the repo: try the next layout
        except (OSError, ValueError, HfHubHTTPError) as err:
            raise hub_error(repo, err, f"its {layout} {NOT_CACHED} none") from None
        if layout == SAFETENSORS_INDEX:
            for shard in shard_names(folder / SAFETENSORS_INDEX):
                try:
                    hf_hub_download(repo_id=repo, filename=shard)
                except (OSError, ValueError, HfHubHTTPError, EntryNotFoundError) as err:
                    raise hub_error(repo, err, f"its shard {shard} {NOT_CACHED} none") from None
        return folder
    raise hub_error(
        repo,
        None,
        f"its config.json is in the local Hugging Face cache but none of {WEIGHTS_WANTED} is "
        "(and the hub cannot be reached or has none of them)",
    )


def source_folder(location: str, hub: bool) -> Path:
    """The local folder a source's checkpoint is in: a hub id's cached snapshot, or the path."""
    return resolve_hub(location) if hub else Path(location)


# --- dtypes ------------------------------------------------------------------------------------


def config_dtype(config: Mapping[str, Any]) -> torch.dtype | None:
    """The floating dtype a transformers config names (``dtype``, or the older
    ``torch_dtype``), None where it names none (or ``auto``)."""
    value = config.get("dtype") or config.get("torch_dtype")
    if not isinstance(value, str):
        return None
    dtype = getattr(torch, value.removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def stored_dtype(folder: Path, layout: str) -> torch.dtype | None:
    """The floating dtype most of the stored weights have; None if none is floating or the
    files cannot be read (the loader then says what is wrong with them)."""
    from huggingface_hub import get_local_safetensors_metadata
    from huggingface_hub.errors import SafetensorsParsingError

    try:
        if layout == PICKLE_FILE:
            state = torch.load(folder / layout, map_location="cpu", weights_only=True, mmap=True)
            return dominant_dtype(state.values())
        counts: Counter[torch.dtype] = Counter()
        for name, count in get_local_safetensors_metadata(folder).parameter_count.items():
            if name in _SAFETENSORS_DTYPES:
                counts[_SAFETENSORS_DTYPES[name]] += count
    except (OSError, ValueError, RuntimeError, AttributeError, SafetensorsParsingError):
        return None
    return counts.most_common(1)[0][0] if counts else None


def checkpoint_dtype(folder: Path, layout: str, config: Mapping[str, Any]) -> torch.dtype | None:
    """The checkpoint's own dtype: what its config names, else what its weights are stored in
    (uni2ts configs name none)."""
    return config_dtype(config) or stored_dtype(folder, layout)


def load_dtype(
    device: torch.device, checkpoint: torch.dtype | None, library_keeps_dtype: bool
) -> torch.dtype:
    """The dtype to load a checkpoint in and run it in.

    float32 on CPU (and any device other than CUDA). On CUDA, what the family's library does
    by default: the checkpoint's own dtype where it keeps it (``library_keeps_dtype``:
    chronos-forecasting), float32 where it builds the network in float32 (uni2ts, Lag-Llama)
    or the checkpoint's dtype is unknown.
    """
    if device.type != "cuda" or not library_keeps_dtype or checkpoint is None:
        return torch.float32
    return checkpoint
