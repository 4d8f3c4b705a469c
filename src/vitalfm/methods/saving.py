"""Saving and loading what a method trained: peft's adapter folder, or a few named tensors.

Both write into a temporary sibling folder that replaces the target as a whole, so a killed
job never leaves a folder that looks finished. Loading checks that the folder holds what the
method's kind saves and names the fix when it does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vitalfm.io import atomic_dir, json_text
from vitalfm.methods import modules
from vitalfm.methods.spec import MethodSpec
from vitalfm.models.base import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ModelError, read_adapter_config

TUNED_TENSORS = "tuned_parameters.safetensors"
TUNED_INDEX = "tuned_parameters.json"
TUNED_FORMAT = "vitalfm.tuned_parameters"


def _unreadable(directory: Path, why: str, spec: MethodSpec) -> ModelError:
    return ModelError(
        f"method {spec.name!r}: the adapted weights in {directory} cannot be loaded: {why}",
        "rerun the training step for this method (delete the folder first if it is stale)",
    )


def _require_files(directory: Path, files: tuple[str, ...], spec: MethodSpec) -> None:
    if not directory.is_dir():
        raise _unreadable(directory, "the folder does not exist", spec)
    for file in files:
        if not (directory / file).is_file():
            raise _unreadable(directory, f"{file} is missing", spec)


def save_peft(module: nn.Module, spec: MethodSpec, directory: Path) -> None:
    if not modules.is_peft(module):
        raise ModelError(
            f"method {spec.name!r}: expected a peft model to save, got {type(module).__name__}",
            "save the module that adapt() returned, before merging it",
        )
    with atomic_dir(directory) as tmp:
        module.save_pretrained(str(tmp))


def _peft_load_errors() -> tuple[type[BaseException], ...]:
    """What peft raises for an adapter folder that does not fit or is damaged."""
    from safetensors import SafetensorError

    return (SafetensorError, ValueError, TypeError, KeyError, OSError, RuntimeError)


def _merge_peft(base: nn.Module, directory: Path) -> nn.Module:
    """``base`` with the peft adapter in ``directory`` loaded (frozen) and merged into it."""
    from peft import PeftModel

    modules.patch_input_embeddings(base)
    model = PeftModel.from_pretrained(base, str(directory), is_trainable=False)
    return model.merge_and_unload()


def load_peft(base: nn.Module, spec: MethodSpec, directory: Path, method: Any) -> nn.Module:
    """``base`` with the saved adapter merged in; ``method`` checks the saved config's kind."""
    _require_files(directory, (ADAPTER_CONFIG, ADAPTER_WEIGHTS), spec)
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise _unreadable(directory, f"{ADAPTER_CONFIG} is unreadable ({err})", spec) from None
    if not isinstance(config, dict):
        raise _unreadable(directory, f"{ADAPTER_CONFIG} is not a JSON object", spec)
    if not method.holds_this_kind(config):
        saved = "DORA" if config.get("use_dora") else config.get("peft_type")
        raise _unreadable(directory, f"it holds a {saved} adapter, not {spec.kind}", spec)
    try:
        return _merge_peft(base, directory)
    except _peft_load_errors() as err:
        raise _unreadable(directory, f"{type(err).__name__}: {err}", spec) from err


def merge_adapter_folder(base: nn.Module, directory: Path) -> nn.Module:
    """``base`` with a peft adapter folder trained elsewhere merged in (any peft type).

    Unlike :func:`load_peft`, no method spec says what the folder holds: peft's own config
    does. The merged model comes back frozen, as peft (and chronos-forecasting's loader) leave
    it: parameters that require grad take other CPU kernels, and forecasts would differ from
    upstream's in the last bits. A method that trains it further sets what trains.
    """
    read_adapter_config(directory)
    try:
        merged = _merge_peft(base, directory)
    except _peft_load_errors() as err:
        raise ModelError(
            f"adapter {directory} does not fit its base model ({type(err).__name__}: {err})",
            "check that the base (`base:` beside `adapter:`, else the adapter config's "
            "base_model_name_or_path) is the model the adapter was trained on",
        ) from None
    return merged.requires_grad_(False)


def write_portable_base(directory: Path, base_reference: str) -> None:
    """Point a saved adapter at its base by hub id or absolute folder, so that
    ``PeftModel``/``Chronos2Pipeline.from_pretrained(<adapter>)`` finds it from anywhere
    (peft records the path the base was loaded from, which may be relative)."""
    path = directory / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_reference
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def add_bias(linear: nn.Linear) -> None:
    """A zero, trainable bias for a linear that has none (its output is unchanged)."""
    weight = linear.weight
    linear.bias = nn.Parameter(
        torch.zeros(linear.out_features, dtype=weight.dtype, device=weight.device)
    )


def save_tensors(module: nn.Module, spec: MethodSpec, directory: Path) -> None:
    """The trainable tensors of ``module`` and an index naming them and the method."""
    from safetensors.torch import save_file

    tensors = {n: t.cpu().contiguous().clone() for n, t in modules.trainable_state(module).items()}
    index = {
        "format": TUNED_FORMAT,
        "version": 1,
        "method": spec.to_dict(),
        "parameters": {n: list(t.shape) for n, t in tensors.items()},
    }
    with atomic_dir(directory) as tmp:
        save_file(tensors, str(tmp / TUNED_TENSORS), metadata={"format": TUNED_FORMAT})
        (tmp / TUNED_INDEX).write_text(json_text(index))


def load_tensors(base: nn.Module, spec: MethodSpec, directory: Path) -> nn.Module:
    """Copy saved tensors into ``base``; a saved ``<linear>.bias`` the base lacks is an added
    bias (BitFit on bias-free linears) and is re-created first."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _require_files(directory, (TUNED_INDEX, TUNED_TENSORS), spec)
    try:
        index = json.loads((directory / TUNED_INDEX).read_text())
        tensors = load_file(str(directory / TUNED_TENSORS))
    except (OSError, ValueError, SafetensorError) as err:
        raise _unreadable(directory, f"{type(err).__name__}: {err}", spec) from None
    if not isinstance(index, dict) or index.get("format") != TUNED_FORMAT:
        raise _unreadable(directory, f"{TUNED_INDEX} is not a {TUNED_FORMAT} index", spec)
    saved_kind = (index.get("method") or {}).get("kind")
    if saved_kind != spec.kind:
        raise _unreadable(directory, f"it was saved by kind {saved_kind!r}, not {spec.kind}", spec)
    if set(tensors) != set(index.get("parameters", {})):
        raise _unreadable(directory, "its tensors do not match its index", spec)
    owners = dict(base.named_modules())
    for name in tensors:
        owner_name, _, leaf = name.rpartition(".")
        owner = owners.get(owner_name)
        if leaf == "bias" and isinstance(owner, nn.Linear) and owner.bias is None:
            add_bias(owner)
    params = dict(base.named_parameters())
    missing = sorted(set(tensors) - set(params))
    if missing:
        raise _unreadable(
            directory, f"this model has no parameter(s) {', '.join(missing[:5])}", spec
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            param = params[name]
            if param.shape != tensor.shape:
                raise _unreadable(
                    directory,
                    f"{name} has shape {list(tensor.shape)}, the model's {list(param.shape)}",
                    spec,
                )
            param.copy_(tensor.to(device=param.device, dtype=param.dtype))
    return base
