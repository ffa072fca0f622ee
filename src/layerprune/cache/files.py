"""The on-disk cache's files: its location, atomic writes, locks, manifests and file digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..errors import InvalidInputError

CACHE_ENV = "LAYERPRUNE_CACHE"
MANIFEST = "layerprune-asset.json"


def cache_root() -> Path:
    """The cache directory: $LAYERPRUNE_CACHE, else $XDG_CACHE_HOME/layerprune, else ~/.cache/layerprune."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser().resolve() / "layerprune"


def _make_cache_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidInputError(
            f"cannot create the cache directory {path} ({error.strerror or error}); "
            f"set {CACHE_ENV} to a writable directory"
        ) from None


def cache_path(*parts: str) -> Path:
    """A path inside the cache (parent directories are created)."""
    path = cache_root().joinpath(*parts)
    _make_cache_dir(path.parent)
    return path


def file_lock(path: Path) -> FileLock:
    """An inter-process lock guarding the creation of `path`; lock files live in <cache>/locks."""
    locks = cache_root() / "locks"
    _make_cache_dir(locks)
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
    return FileLock(str(locks / f"{path.name}-{key}.lock"))


def check_writable(path: Path, *, directory: bool = False) -> None:
    """Raise InvalidInputError unless the file (or, with `directory`, the directory) `path` can be written: the
    nearest existing directory above it (or the directory itself) is writable.

    Creates nothing; for checking an output location before long work.
    """
    ancestor = Path(path).expanduser().absolute()
    if not directory:
        ancestor = ancestor.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        problem = "is not a directory" if not ancestor.is_dir() else "is not writable"
        raise InvalidInputError(f"cannot write {path}: {ancestor} {problem}; choose another output location")


def _unwritable(final: Path, error: OSError) -> InvalidInputError:
    return InvalidInputError(f"cannot write {final} ({error.strerror or error}); choose another output location")


def _temporary_name(final: Path, suffix: str) -> Path:
    """A fresh hidden name next to `final` (hidden, so that the book build and globs of results skip it)."""
    return final.parent / f".{final.name}.{secrets.token_hex(6)}{suffix}"


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; rename it to `final` only if the block succeeds.

    It is created like any directory (permissions from the umask), not private like `tempfile.mkdtemp`'s.
    """
    tmp = _temporary_name(final, ".tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as error:
        raise _unwritable(final, error) from None
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary file path next to `final`; move it onto `final` only if the block succeeds.

    It is created like any file (permissions from the umask), not private like `tempfile.mkstemp`'s.
    """
    tmp = _temporary_name(final, f".tmp{final.suffix}")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise _unwritable(final, error) from None
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON atomically (sorted keys, so equal payloads give equal bytes)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_manifest(directory: Path, info: dict[str, Any]) -> None:
    """Record `info` and the size of every file in `directory` (call last, inside `atomic_dir`)."""
    sizes = {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}
    (directory / MANIFEST).write_text(json.dumps({**info, "sizes": sizes}, indent=2, sort_keys=True))


def is_complete(directory: Path) -> bool:
    """True if `directory` has a manifest (`write_manifest`) and every file in it still has its recorded size."""
    try:
        sizes = json.loads((directory / MANIFEST).read_text())["sizes"]
        return all(
            (directory / name).is_file() and (directory / name).stat().st_size == size for name, size in sizes.items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
