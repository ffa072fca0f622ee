"""Reusing an executed chapter: one run with the same notebook, parameters, package code, versions and machine,
whose result files are still there unchanged, is not executed again, so a warm rerun of the book only renders it.

The executed notebook records (in its metadata) a fingerprint of what it depends on and a digest of every result
file it wrote; `reusable` checks both."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..cache import atomic_file, sha256_file
from ..machine import timing_machine
from ..study.files import chapter_prefix

PACKAGE = Path(__file__).resolve().parents[1]
RECORD_KEY = "layerprune"


def environment() -> str:
    """sha256 of what every chapter depends on alike: every file of the package, and `timing_machine()` (CPU,
    cores, threads and library versions). Computed once per run of the book."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PACKAGE)).encode() + path.read_bytes())
    digest.update(json.dumps(timing_machine(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def fingerprint(
    notebook: Path, parameters: Mapping[str, Any], results: Path, shared: str, reads: Sequence[str] = ()
) -> str:
    """sha256 of what an executed chapter depends on: the notebook, its parameters, the result files of the
    chapters it `reads` (`study.files.READS`: chapter 7 reads 1, 2, 4 and 5) and `shared`, the `environment()`."""
    digest = hashlib.sha256(notebook.read_bytes())
    digest.update(json.dumps(dict(parameters), sort_keys=True, default=str).encode())
    sources = {chapter_prefix(chapter) for chapter in reads}
    read = [name for name in sorted(snapshot(results)) if chapter_prefix(name) in sources]
    inputs = {name: sha256_file(results / name) for name in read}
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    digest.update(shared.encode())
    return digest.hexdigest()


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(modification time, size) of each finished file in `folder` (hidden temporary files aside)."""
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if _finished(p)}


def written_since(folder: Path, before: Mapping[str, tuple[int, int]]) -> dict[str, str]:
    """sha256 of each file in `folder` that is new or changed since `before` (a `snapshot`)."""
    after = snapshot(folder)
    return {name: sha256_file(folder / name) for name, state in sorted(after.items()) if before.get(name) != state}


def record(executed: Path, stamp: str, outputs: Mapping[str, str]) -> None:
    """Store the fingerprint and the result files' digests in the executed notebook's metadata."""
    notebook = json.loads(executed.read_text())
    notebook.setdefault("metadata", {})[RECORD_KEY] = {"fingerprint": stamp, "outputs": dict(outputs)}
    with atomic_file(executed) as tmp:
        tmp.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def reusable(executed: Path, stamp: str, results: Path) -> bool:
    """Whether `executed` was run with this fingerprint and every result file it wrote is still as it wrote it."""
    try:
        stored = json.loads(executed.read_text())["metadata"][RECORD_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if stored.get("fingerprint") != stamp:
        return False
    outputs = stored.get("outputs", {})
    return all((results / name).is_file() and sha256_file(results / name) == digest for name, digest in outputs.items())


def _finished(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")
