"""The on-disk cache: files (location, atomic writes, locks), keys (the one tensor hash, model identities) and
the store that every cached result goes through."""

from .files import (
    CACHE_ENV,
    MANIFEST,
    atomic_dir,
    atomic_file,
    cache_path,
    cache_root,
    check_writable,
    file_lock,
    is_complete,
    sha256_file,
    write_json_atomic,
    write_manifest,
)
from .keys import (
    blocks_digest,
    hash_tensor,
    key_part,
    model_identity,
    path_digest,
    pruned_identity,
    stable_hash,
    tensor_digest,
)
from .store import cached, cached_batch, cached_dir, decode_records, encode_records, entry_lock, read_entry, write_entry

__all__ = [
    "CACHE_ENV",
    "MANIFEST",
    "atomic_dir",
    "atomic_file",
    "blocks_digest",
    "cache_path",
    "cache_root",
    "cached",
    "cached_batch",
    "cached_dir",
    "check_writable",
    "decode_records",
    "encode_records",
    "entry_lock",
    "file_lock",
    "hash_tensor",
    "is_complete",
    "key_part",
    "model_identity",
    "path_digest",
    "pruned_identity",
    "read_entry",
    "sha256_file",
    "stable_hash",
    "tensor_digest",
    "write_entry",
    "write_json_atomic",
    "write_manifest",
]
