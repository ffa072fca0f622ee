"""Training checkpoints: atomic step directories with a sha256 manifest, and resuming from the latest valid one.

A checkpoint is ``<dir>/step-00000040/`` holding the adapter weights, the optimizer and scheduler state, the
RNG states of every process, the progress so far (``state.json``) and ``manifest.json`` (the run's settings and
the sha256 of every file). It appears at once (written in a temporary directory, then renamed); one whose files
do not match their manifest is damaged and skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..cache import atomic_dir, sha256_file, write_json_atomic
from ..errors import InvalidInputError

FORMAT = 1
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_ADAPTER, _OPTIMIZER, _SCHEDULER, _RNG, _STATE, _MANIFEST = (
    "adapter.safetensors",
    "optimizer.pt",
    "scheduler.pt",
    "rng.pt",
    "state.json",
    "manifest.json",
)


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    state: dict[str, Any]
    adapter: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict[str, Any]]


def save_checkpoint(directory: Path, checkpoint: Checkpoint, settings: dict[str, Any], keep: int = 2) -> Path:
    """Write `checkpoint` atomically as ``step-NNNNNNNN``, then keep only the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    _remove_unfinished(directory)
    final = directory / f"step-{checkpoint.step:08d}"
    with atomic_dir(final) as tmp:
        save_file(
            {name: tensor.detach().contiguous().cpu() for name, tensor in checkpoint.adapter.items()}, tmp / _ADAPTER
        )
        torch.save(checkpoint.optimizer, tmp / _OPTIMIZER)
        torch.save(checkpoint.scheduler, tmp / _SCHEDULER)
        torch.save(checkpoint.rng, tmp / _RNG)
        (tmp / _STATE).write_text(json.dumps(checkpoint.state, sort_keys=True))
        files = {name: sha256_file(tmp / name) for name in (_ADAPTER, _OPTIMIZER, _SCHEDULER, _RNG, _STATE)}
        write_json_atomic(
            tmp / _MANIFEST, {"format": FORMAT, "step": checkpoint.step, "settings": settings, "files": files}
        )
    for old in _step_dirs(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(directory: Path, settings: dict[str, Any]) -> Checkpoint | None:
    """The newest valid checkpoint in `directory` (damaged ones are skipped with a warning), or None.

    Raises InvalidInputError when that checkpoint was written by a run with other settings.
    """
    for path in reversed(_step_dirs(directory)):
        manifest = _verified_manifest(path)
        if manifest is None:
            warnings.warn(f"ignoring damaged checkpoint {path}", RuntimeWarning, stacklevel=2)
            continue
        _check_settings(directory, manifest["settings"], settings)
        try:
            return _read(path, manifest["step"])
        except (OSError, RuntimeError, ValueError, json.JSONDecodeError):
            warnings.warn(f"ignoring unreadable checkpoint {path}", RuntimeWarning, stacklevel=2)
    return None


def checkpoint_steps(directory: Path) -> list[int]:
    """The steps of the checkpoint directories present (valid or not), in increasing order."""
    return [int(_STEP_DIR.match(path.name).group(1)) for path in _step_dirs(directory)]


def _step_dirs(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def _remove_unfinished(directory: Path) -> None:
    """Temporary directories left by a writer that was killed; they are never checkpoints."""
    for leftover in directory.glob(".step-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def _verified_manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / _MANIFEST).read_text())
        files = manifest["files"]
        intact = manifest["format"] == FORMAT and all(
            (path / name).is_file() and sha256_file(path / name) == digest for name, digest in files.items()
        )
        matches_name = f"step-{manifest['step']:08d}" == path.name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (
        manifest if intact and matches_name and set(files) == {_ADAPTER, _OPTIMIZER, _SCHEDULER, _RNG, _STATE} else None
    )


def _check_settings(directory: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    differences = {key for key in recorded.keys() | current.keys() if recorded.get(key) != current.get(key)}
    if differences:
        details = "; ".join(
            f"{key}: {recorded.get(key)!r} there, {current.get(key)!r} now" for key in sorted(differences)
        )
        raise InvalidInputError(
            f"checkpoint directory {directory} belongs to a run with other settings ({details}); "
            "use another checkpoint directory, or delete this one to start over"
        )


def _read(path: Path, step: int) -> Checkpoint:
    return Checkpoint(
        step=step,
        state=json.loads((path / _STATE).read_text()),
        adapter=load_file(path / _ADAPTER),
        optimizer=torch.load(path / _OPTIMIZER, weights_only=True),
        scheduler=torch.load(path / _SCHEDULER, weights_only=True),
        rng=torch.load(path / _RNG, weights_only=True),
    )
