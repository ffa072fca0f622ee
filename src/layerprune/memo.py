"""Results cached on disk, keyed by a hash of everything that determines them; written atomically, checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import torch
import xxhash

from .cache import cache_path, file_lock, stable_hash, write_json_atomic
from .identity import hash_tensor

T = TypeVar("T")


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short digest of a tensor's shape, dtype and values (e.g. the token blocks a result was computed on)."""
    digest = xxhash.xxh3_64()
    hash_tensor(digest, tensor)
    return digest.hexdigest()


def encode_records(rows: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Table rows (dicts) as JSON that keeps the column order (cache files are written with sorted keys)."""
    columns = list(dict.fromkeys(name for row in rows for name in row))
    return {"columns": columns, "rows": [[row.get(name) for name in columns] for row in rows]}


def decode_records(payload: Mapping[str, list]) -> list[dict[str, Any]]:
    """The inverse of `encode_records`."""
    return [dict(zip(payload["columns"], values, strict=True)) for values in payload["rows"]]


def _checksum(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def cached(
    kind: str,
    key: Mapping[str, Any],
    compute: Callable[[], T],
    *,
    encode: Callable[[T], Any],
    decode: Callable[[Any], T],
) -> T:
    """Return the cached result for (`kind`, `key`), or compute, store and return it.

    A cache file that does not parse, whose key differs or whose checksum fails is recomputed, never used.
    """
    path = cache_path("results", kind, f"{stable_hash(dict(key))}.json")
    with file_lock(path):
        if path.exists():
            try:
                stored = json.loads(path.read_text())
                if stored["key"] == json.loads(json.dumps(dict(key), default=str)) and stored["checksum"] == _checksum(
                    stored["value"]
                ):
                    return decode(stored["value"])
            except (ValueError, KeyError, TypeError):
                pass
        result = compute()
        value = encode(result)
        write_json_atomic(
            path, {"key": json.loads(json.dumps(dict(key), default=str)), "value": value, "checksum": _checksum(value)}
        )
    return result
