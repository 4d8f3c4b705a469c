"""A training run's checkpoint folder: write, verify, resume, set aside, clear.

Each checkpoint is a ``step-<k>`` folder written atomically (:func:`vitalfm.io.atomic_dir`):
the trainable weights, the best weights so far, the optimizer and scheduler state, and a
``state.json`` with the counters, the history, the checksum of every file and the run's
fingerprint (a hash of what the weights depend on). Only the newest
:data:`KEEP_CHECKPOINTS` are kept. A checkpoint whose fingerprint differs was written for
another configuration: it is set aside, never reused and never deleted. A damaged one is
refused with the folder to delete. :func:`finish_checkpoints` clears the folder once a run is
done. What the trainer puts in and takes out is :class:`vitalfm.engine.train.Trainer`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vitalfm.engine.training_config import TrainingError
from vitalfm.io import atomic_dir, json_text, remove_partial_writes

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: best tracking on the selection metric
KEEP_CHECKPOINTS = 2


def number_or(value: float | None, missing: float) -> float:
    """A number from a checkpoint's strict JSON, where NaN and infinities are written as null."""
    return missing if value is None else float(value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Checkpoint:
    """A verified checkpoint, read back: its tensors (on CPU) and its ``state.json``."""

    path: Path
    state: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]  # {"optimizer": state dict, "scheduler": state dict}


class CheckpointFolder:
    """The ``step-<k>`` checkpoints of one run, all written for ``fingerprint``."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def steps(self) -> list[Path]:
        """The checkpoint folders, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.glob("step-*") if p.is_dir()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def save(
        self,
        step: int,
        trainable: dict[str, torch.Tensor],
        best: dict[str, torch.Tensor] | None,
        optimizer: dict[str, Any],
        progress: dict[str, Any],
    ) -> Path:
        """Write checkpoint ``step`` (``progress``: the counters and history for state.json)
        and drop all but the newest :data:`KEEP_CHECKPOINTS`."""
        target = self.directory / f"step-{step:07d}"
        with atomic_dir(target) as tmp:
            save_file(trainable, tmp / "trainable.safetensors")
            if best is not None:
                save_file(best, tmp / "best.safetensors")
            torch.save(optimizer, tmp / "optimizer.pt")
            files = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
            state = {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "step": step,
                **progress,
                "files": files,
            }
            (tmp / "state.json").write_text(json_text(state, indent=1))  # strict: NaN as null
        for old in self.steps()[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def corrupt(self, path: Path, why: str) -> TrainingError:
        return TrainingError(
            f"the checkpoint {path} cannot be resumed: {why}",
            f"delete {self.directory} to restart this run from step 0",
        )

    def set_aside(self, old_fingerprint: str) -> Path:
        """Move checkpoints written for another configuration out of the way (never reuse
        them, never delete a user's files): ``<folder>.set-aside-<their fingerprint>``."""
        aside = self.directory.with_name(f"{self.directory.name}.set-aside-{old_fingerprint[:12]}")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(self.directory, aside)
        log.warning(
            "the checkpoints in %s were written for another configuration (model, method, data "
            "or training settings changed); set aside as %s, training starts from step 0",
            self.directory,
            aside,
        )
        return aside

    def remove_partial_writes(self) -> None:
        """Checkpoint folders a kill interrupted mid-write (atomic_dir's temporaries)."""
        for leftover in remove_partial_writes(self.directory):
            log.info("removed %s, left by an interrupted checkpoint write", leftover)

    def load_latest(self) -> Checkpoint | None:
        """The newest checkpoint, verified; None when there is none or it was written for
        another configuration (then set aside). A damaged one is a :class:`TrainingError`."""
        self.remove_partial_writes()
        found = self.steps()
        if not found:
            return None
        path = found[-1]
        try:
            state = json.loads((path / "state.json").read_text())
        except (OSError, ValueError) as err:
            raise self.corrupt(path, f"state.json is unreadable ({err})") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise self.corrupt(path, f"unknown checkpoint format {state.get('format')!r}")
        if state.get("fingerprint") != self.fingerprint:
            self.set_aside(str(state.get("fingerprint")))
            return None
        for name, digest in state["files"].items():
            file = path / name
            if not file.is_file() or _sha256(file) != digest:
                raise self.corrupt(path, f"{name} is missing or does not match its checksum")
        try:
            trained = load_file(path / "trainable.safetensors")
            best = (
                load_file(path / "best.safetensors")
                if (path / "best.safetensors").is_file()
                else None
            )
            opt_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        except (SafetensorError, RuntimeError, OSError, ValueError) as err:
            raise self.corrupt(path, f"its tensors cannot be read ({err})") from None
        return Checkpoint(path, state, trained, best, opt_state)


def finish_checkpoints(checkpoint_dir: str | Path, keep: bool) -> None:
    """After a finished run: remove its checkpoints (and any set aside for an earlier
    configuration) unless ``keep``; a killed run keeps them to resume."""
    folder = Path(checkpoint_dir)
    if keep:
        log.info("checkpoints kept in %s (training.keep_checkpoints)", folder)
        return
    for path in [folder, *folder.parent.glob(f"{folder.name}.set-aside-*")]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed the checkpoints in %s (the run finished)", path)
    for parent in (folder.parent, folder.parent.parent):  # <model>/<setting>/ when empty
        with contextlib.suppress(OSError):
            parent.rmdir()
