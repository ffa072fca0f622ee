"""The one front end of the result cache: every cached result (profiles, lens, losses, generations, timings,
evaluations, healing runs) is stored under ``<cache>/results/<kind>/<stable_hash(key)>``, guarded by one lock per
entry, and a JSON entry carries its key and a sha256 checksum of its value: a file that does not parse, whose key
differs or whose checksum fails is recomputed, never used."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..machine import timing_machine
from .files import cache_path, file_lock, write_json_atomic
from .keys import key_part, stable_hash

T = TypeVar("T")
K = TypeVar("K")
RESULTS = "results"


def encode_records(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Table rows (dicts) as JSON that keeps the column order (cache files are written with sorted keys)."""
    columns = list(dict.fromkeys(name for row in rows for name in row))
    return {"columns": columns, "rows": [[row.get(name) for name in columns] for row in rows]}


def decode_records(payload: Mapping[str, list]) -> list[dict[str, Any]]:
    """The inverse of `encode_records`."""
    return [dict(zip(payload["columns"], values, strict=True)) for values in payload["rows"]]


def _plain_key(key: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(key), default=str))


def _checksum(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def entry_path(kind: str, key: Mapping[str, Any], suffix: str = ".json") -> Path:
    """Where the entry for (`kind`, `key`) lives; `suffix` "" names a directory entry."""
    return cache_path(RESULTS, kind, f"{stable_hash(dict(key))}{suffix}")


def read_entry(kind: str, key: Mapping[str, Any]) -> Any | None:
    """The stored JSON value for (`kind`, `key`), or None when absent or damaged in any way."""
    path = entry_path(kind, key)
    try:
        stored = json.loads(path.read_text())
        if stored["key"] == _plain_key(key) and stored["checksum"] == _checksum(stored["value"]):
            return stored["value"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def write_entry(kind: str, key: Mapping[str, Any], value: Any) -> None:
    """Store a JSON value for (`kind`, `key`) atomically, with its key and checksum."""
    payload = {"key": _plain_key(key), "value": value, "checksum": _checksum(value)}
    write_json_atomic(entry_path(kind, key), payload)


def entry_lock(kind: str, key: Mapping[str, Any]):
    """The inter-process lock of one entry: a second process computing the same result waits, then reads it."""
    return file_lock(entry_path(kind, key))


def cached(
    kind: str,
    key: Mapping[str, Any],
    compute: Callable[[], T],
    *,
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
) -> T:
    """Return the cached result for (`kind`, `key`), or compute, store and return it."""
    with entry_lock(kind, key):
        stored = read_entry(kind, key)
        if stored is not None:
            try:
                return decode(stored)
            except (ValueError, KeyError, TypeError):
                pass
        result = compute()
        write_entry(kind, key, encode(result))
    return result


def cached_batch(
    kind: str,
    keys: Mapping[K, Mapping[str, Any]],
    compute: Callable[[list[K]], Mapping[K, T]],
    *,
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
) -> dict[K, T]:
    """`cached` for several entries computed together: the result for each name of `keys` (name -> key), read
    from its entry where it is stored and valid, else from one call `compute(missing names)` that returns a result
    per missing name, each then stored. The entries' locks are taken in one fixed order (by entry name), so two
    processes asking for overlapping sets wait for each other instead of deadlocking."""
    with contextlib.ExitStack() as stack:
        for path in sorted({entry_path(kind, key) for key in keys.values()}):
            stack.enter_context(file_lock(path))
        results: dict[K, T] = {}
        for name, key in keys.items():
            stored = read_entry(kind, key)
            if stored is not None:
                with contextlib.suppress(ValueError, KeyError, TypeError):  # not what this version writes
                    results[name] = decode(stored)
        missing = [name for name in keys if name not in results]
        if missing:
            fresh = compute(missing)
            for name in missing:
                results[name] = fresh[name]
                write_entry(kind, keys[name], encode(fresh[name]))
    return {name: results[name] for name in keys}


@contextlib.contextmanager
def cached_dir(kind: str, key: Mapping[str, Any]) -> Iterator[Path]:
    """A directory entry for (`kind`, `key`), held under its lock for the block: for results that keep their own
    verified files (healing checkpoints) and resume from what is there."""
    path = entry_path(kind, key, suffix="")
    with file_lock(path):
        yield path


def cacheable(
    kind: str, *, encode: Callable[[T], Any], decode: Callable[[Any], T], timing: bool = False
) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Give a function a `cache` keyword: with `cache=True` its result goes through `cached` under `kind`, keyed by
    every argument but `progress` (models by identity, tensors by digest: `key_part`) and, for a `timing`, by
    this machine's description (`timing_machine`: hardware and versions, never its name), so a rerun with the
    same arguments shows what was measured the first time."""

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args: Any, cache: bool = False, **kwargs: Any) -> T:
            if not cache:
                return function(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = {name: key_part(value) for name, value in bound.arguments.items() if name != "progress"}
            if timing:
                key["machine"] = timing_machine()
            return cached(kind, key, functools.partial(function, *args, **kwargs), encode=encode, decode=decode)

        return run

    return decorate
