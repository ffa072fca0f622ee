"""Shared fixtures: tiny models, the byte tokenizer, an isolated cache directory."""

from __future__ import annotations

import pytest

from layerprune.speed.measure import torch_threads
from layerprune.tiny import byte_tokenizer


@pytest.fixture(scope="session", autouse=True)
def float32_everywhere():
    """Tests compute in float32 on every CPU (auto would pick bf16 where it is native), so that their numbers and
    tolerances do not depend on the machine; tests/test_dtype.py checks the automatic choice itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERPRUNE_DTYPE", "float32")
        yield


@pytest.fixture(scope="session")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """An empty LAYERPRUNE_CACHE for tests that must not touch the real cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(root))
    return root


@pytest.fixture
def files_under():
    """A function listing every file below a path, for checking that nothing partial was left behind."""

    def listing(path) -> set[str]:
        return {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} if path.exists() else set()

    return listing


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread (also in the subprocesses) for timing tests: two threads on a busy two-core machine wait on
    each other."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three short documents: one each for the profile, heal and held-out splits, quick to tokenize."""
    folder = tmp_path_factory.mktemp("corpus")
    for index in range(3):
        (folder / f"{index}.txt").write_text(f"Document {index}. " + "The state of the union is strong. " * 40)
    return str(folder)
