"""Cache keys: the one tensor hash, model identities and digests of the exact data a result was computed on."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import xxhash
from torch import nn


def stable_hash(payload: Any, length: int = 16) -> str:
    """A short hash of a JSON-serialisable payload, independent of key order."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def hash_tensor(digest: xxhash.xxh3_64, tensor: torch.Tensor, prefix: str = "") -> None:
    """Feed `prefix`, the tensor's shape and dtype, then its bytes (in place, not copied) into `digest`."""
    data = tensor.detach().to("cpu").contiguous()
    digest.update(f"{prefix}{tuple(data.shape)}:{data.dtype}".encode())
    if data.numel():
        digest.update(memoryview(data.view(torch.uint8).numpy()))


def tensor_digest(tensor: torch.Tensor) -> str:
    """A short digest of a tensor's shape, dtype and values (e.g. the token blocks a result was computed on)."""
    digest = xxhash.xxh3_64()
    hash_tensor(digest, tensor)
    return digest.hexdigest()


def blocks_digest(blocks: torch.Tensor | Mapping[str, torch.Tensor]) -> str:
    """`tensor_digest` of token blocks, or of each named tensor of a tokenized batch (joined by '+')."""
    if isinstance(blocks, torch.Tensor):
        return tensor_digest(blocks)
    return "+".join(tensor_digest(blocks[name]) for name in sorted(blocks))


def model_identity(model: nn.Module) -> str:
    """A 16-hex-digit digest of the model's config and every tensor in its state dict (PeftModel included).

    Two models with equal configs and bit-identical weights get the same identity; any changed weight or dtype,
    removed layer or added adapter changes it.
    """
    digest = xxhash.xxh3_64()  # not cryptographic, for cache keys: 0.2 s/GB where blake2b takes 4 s/GB
    config = getattr(model, "config", None)
    if config is not None:
        settings = config.to_dict()
        settings.pop("_name_or_path", None)
        settings.pop("transformers_version", None)
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, tensor in model.state_dict().items():
        if isinstance(tensor, torch.Tensor):
            hash_tensor(digest, _offloaded(model, name) if tensor.is_meta else tensor, prefix=f"{name}:")
    return digest.hexdigest()


def _offloaded(model: nn.Module, name: str) -> torch.Tensor:
    """The weight `name` of a model that accelerate offloaded (its parameter is a meta tensor): read from the
    weights map of the nearest enclosing module's hook, so an offloaded model has the identity of the whole one."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, -1, -1):
        hook = getattr(model.get_submodule(".".join(parts[:cut])), "_hf_hook", None)
        for candidate in [hook, *getattr(hook, "hooks", ())]:
            weights = getattr(candidate, "weights_map", None)
            if weights is not None:
                return weights[".".join(parts[cut:])]
    raise ValueError(f"{name} is on the meta device and no accelerate hook holds its weights")


def pruned_identity(identity: str, layers: Sequence[int]) -> str:
    """The identity of `prune(model, layers)` from `model`'s identity: pruning is deterministic, so the pruned
    weights need not be hashed again."""
    return stable_hash({"pruned from": identity, "removed": sorted(layers)}) if layers else identity


def path_digest(path: str | Path) -> str:
    """A digest of what a file or directory holds: every file's path relative to `path` and its bytes (xxh3), in
    sorted order. Where `path` lies, its owner and its timestamps do not enter it."""
    root = Path(path).expanduser()
    digest = xxhash.xxh3_64()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        digest.update(f"{file.relative_to(root).as_posix() if file != root else ''}:{file.stat().st_size}:".encode())
        with open(file, "rb") as handle:
            while block := handle.read(1 << 24):
                digest.update(block)
    return digest.hexdigest()


def _local_path(value: Any) -> bool:
    """Whether `value` names a file or directory that exists here (a str or Path, not a bare empty string)."""
    if not isinstance(value, str | os.PathLike) or not str(value) or "\n" in str(value):
        return False
    try:
        return Path(value).expanduser().exists()
    except OSError:  # a name too long for the file system, and the like
        return False


def key_part(value: Any) -> Any:
    """How an argument enters a cache key: by what it holds, never by where it lies. A model by its identity, a
    tensor by its digest, an object with `cache_key` (a profile: without the directory its model was loaded from)
    or else `to_dict` by the hash of that, a local file or directory named by a path by `path_digest` of its
    content, anything else as itself."""
    if isinstance(value, nn.Module):
        return model_identity(value)
    if isinstance(value, torch.Tensor):
        return tensor_digest(value)
    if hasattr(value, "cache_key"):
        return stable_hash(value.cache_key())
    if hasattr(value, "to_dict"):
        return stable_hash(value.to_dict())
    if _local_path(value):
        return {"content": path_digest(value)}
    return value
