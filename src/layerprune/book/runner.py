"""Execute the chapter notebooks with papermill and render the book with Jupyter Book 1.x."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from ..cache import atomic_file
from ..errors import ChapterError, InvalidInputError, LayerpruneError
from ..speed.flops import FLOP_LOG, read_flops
from ..speed.measure import ChildPeak
from ..study.files import READS
from . import reuse

PROFILES = ("smoke", "default", "paper")
GENERATED = Path("book") / "generated"


RUN_RECORD = Path("_build") / "book-run.json"


@dataclass
class BookRun:
    """What `run_book` did: chapters executed (with seconds each, the peak resident memory of the kernel that ran
    each, MiB, and the GFLOPs its models computed, `speed.flops`), this machine's matmul rate in the models' dtype
    (GFLOP/s: GFLOPs / rate is a chapter's floor), chapters reused unchanged from their last run, whether the HTML
    was built, total seconds. The runner writes it to `RUN_RECORD` (`bench/book.py` reads it there)."""

    profile: str = ""
    models: list[str] = field(default_factory=list)
    commit: str = ""
    executed: dict[str, float] = field(default_factory=dict)
    peak_mib: dict[str, float] = field(default_factory=dict)
    gflop: dict[str, float] = field(default_factory=dict)
    matmul_gflops: float = 0.0
    reused: list[str] = field(default_factory=list)
    html: Path | None = None
    seconds: float = 0.0

    def save(self, root: Path) -> Path:
        """Write this run as JSON to `root / RUN_RECORD` (atomically) and return the path."""
        record = dataclasses.asdict(self) | {"html": str(self.html) if self.html else None}
        path = root / RUN_RECORD
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(record, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, root: Path) -> BookRun:
        """The run `save` wrote under `root`."""
        record = json.loads((root / RUN_RECORD).read_text())
        return cls(**record | {"html": Path(record["html"]) if record["html"] else None})


def chapters(root: Path) -> list[str]:
    """The chapter notebooks' names, in order (``notebooks/NN_*.ipynb``)."""
    return sorted(p.stem for p in (root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def load_profile(name: str) -> dict[str, Any]:
    """A named parameter profile shipped with the package: ``{"common": {...}, "chapters": {name: {...}}}``."""
    data = _profile_data(name)
    data.pop("measured", None)
    return _normalise(data, f"profile {name}")


def measured_budget(name: str) -> dict[str, Any] | None:
    """What a cold build of profile `name` was measured to take (its `measured` section), if recorded."""
    return _profile_data(name).get("measured")


def _profile_data(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise InvalidInputError(f"unknown book profile {name!r}; profiles: {', '.join(PROFILES)}")
    return yaml.safe_load(resources.files("layerprune.book").joinpath("profiles", f"{name}.yaml").read_text())


def load_parameter_file(path: str | Path) -> dict[str, Any]:
    """A user's YAML parameters: either flat (``model: ...``) or ``{common: ..., chapters: ...}``."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise InvalidInputError(f"cannot read the parameter file {path}: {error}") from error
    return _normalise(data or {}, str(path))


def _normalise(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInputError(f"{source} must hold a mapping of parameter names to values")
    if set(data) <= {"common", "chapters"}:
        return {"common": dict(data.get("common") or {}), "chapters": dict(data.get("chapters") or {})}
    return {"common": data, "chapters": {}}


def parse_overrides(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """``-p key value`` pairs, values parsed as YAML (so ``0.25`` is a float and ``[1, 2]`` a list)."""
    return {key: yaml.safe_load(value) for key, value in pairs}


def _declared(notebook: Path) -> dict[str, dict[str, str]]:
    """The notebook's `parameters` cell as papermill reads it: name -> inferred type, default, help."""
    import papermill

    return papermill.inspect_notebook(str(notebook))


def chapter_parameters(notebook: Path, layers: Sequence[Mapping[str, Any]], chapter: str) -> dict[str, Any]:
    """The parameters for one notebook: later layers win; only names in its `parameters` cell are passed."""
    declared = _declared(notebook)
    merged: dict[str, Any] = {}
    for layer in layers:
        merged |= layer.get("common", {})
        merged |= layer.get("chapters", {}).get(chapter, {})
    return {name: value for name, value in merged.items() if name in declared}


_KINDS: dict[type, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}
_TYPES: dict[str, type] = {kind.__name__: kind for kind in _KINDS}


def declared_type(spec: Mapping[str, str]) -> type | None:
    """A parameter's type: papermill's inferred type (from an annotation), else that of its literal default.

    None when neither is one of bool, int, float, str, list, dict (then any value is passed on).
    """
    if spec.get("inferred_type_name") in _TYPES:
        return _TYPES[spec["inferred_type_name"]]
    try:
        default = ast.literal_eval(spec.get("default", ""))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return type(default) if type(default) in _TYPES.values() else None


def _fits(kind: type, value: Any) -> bool:
    """None fits every type (several parameters take it for "off" or "all"); an int fits a float."""
    if value is None:
        return True
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, list | tuple) if kind is list else isinstance(value, kind)


def check_parameter_types(notebook: Path, parameters: Mapping[str, Any]) -> None:
    """Raise InvalidInputError for a value whose type differs from that of the parameter's declared default."""
    declared = _declared(notebook)
    for name, value in parameters.items():
        kind = declared_type(declared[name])
        if kind is not None and not _fits(kind, value):
            raise InvalidInputError(
                f"book parameter {name!r} of {notebook.stem} must be {_KINDS[kind]} like its default "
                f"{declared[name]['default']} (or None), got {type(value).__name__} {value!r}"
            )


def _check_known(root: Path, available: Sequence[str], user: Mapping[str, Any]) -> None:
    """Every name the user set is a parameter of some chapter (of that chapter, for chapter sections)."""
    declared = {chapter: set(_declared(root / "notebooks" / f"{chapter}.ipynb")) for chapter in available}
    known = set().union(*declared.values())
    unknown = set(user["common"]) - known
    if unknown:
        raise InvalidInputError(f"unknown book parameter(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    for chapter, values in user["chapters"].items():
        if chapter not in declared:
            raise InvalidInputError(f"parameters for unknown chapter {chapter!r}; chapters: {', '.join(available)}")
        unknown = set(values or {}) - declared[chapter]
        if unknown:
            raise InvalidInputError(
                f"unknown parameter(s) {sorted(unknown)} for chapter {chapter}; "
                f"its parameters: {', '.join(sorted(declared[chapter]))}"
            )


def run_book(
    root: str | Path = ".",
    *,
    profile: str = "default",
    parameter_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    only: Sequence[str] | None = None,
    build: bool = True,
    force: bool = False,
) -> BookRun:
    """Execute chapters into book/generated/ (atomically), then build the HTML book into _build/html.

    Every parameter is checked (name and type) before the first chapter runs. A chapter whose last run had the
    same notebook, parameters, package code and machine, and whose result files are unchanged, is not executed
    again (`reuse`), unless `force`.
    """
    root = Path(root).resolve()
    started = time.perf_counter()
    available = chapters(root)
    if not available:
        raise InvalidInputError(f"{root} holds no chapter notebooks (notebooks/NN_*.ipynb); is --root the book's root?")
    user = load_parameter_file(parameter_file) if parameter_file else {"common": {}, "chapters": {}}
    command_line = {"common": dict(overrides or {}), "chapters": {}}
    _check_known(root, available, {"common": user["common"] | command_line["common"], "chapters": user["chapters"]})
    selected = list(only) if only else available
    missing = [c for c in selected if c not in available]
    if missing:
        raise InvalidInputError(f"unknown chapter(s) {missing}; chapters: {', '.join(available)}")
    location = {"common": {"results_dir": f"results/{profile}"}, "chapters": {}}  # papermill runs in root
    layers = [load_profile(profile), location, user, command_line]
    planned: dict[str, dict[str, Any]] = {}
    for chapter in selected:
        notebook = root / "notebooks" / f"{chapter}.ipynb"
        planned[chapter] = chapter_parameters(notebook, layers, chapter)
        check_parameter_types(notebook, planned[chapter])
    print(budget_note(profile), flush=True)
    run = BookRun(profile=profile, models=models_of(planned.values()), commit=source_commit(root))
    shared = reuse.environment()
    for chapter, parameters in planned.items():
        notebook, output = root / "notebooks" / f"{chapter}.ipynb", root / GENERATED / f"{chapter}.ipynb"
        results = root / parameters["results_dir"]
        stamp = reuse.fingerprint(notebook, parameters, results, shared, READS.get(chapter, ()))
        if not force and reuse.reusable(output, stamp, results):
            print(f"[book] {notebook.name}: unchanged since its last run, not executed (--force runs it)", flush=True)
            run.reused.append(chapter)
            continue
        before = reuse.snapshot(results)
        if not run.matmul_gflops:
            run.matmul_gflops = machine_matmul_gflops()
        executed = execute_chapter(notebook, output, parameters, root)
        run.executed[chapter], run.peak_mib[chapter], run.gflop[chapter] = executed
        reuse.record(output, stamp, reuse.written_since(results, before))
    if build:
        absent = [c for c in available if not (root / GENERATED / f"{c}.ipynb").exists()]
        if absent:
            raise InvalidInputError(
                f"cannot build the book: chapter(s) {absent} were never executed; run without --only"
            )
        run.save(root)  # the pages say which profile, models and commit made them (`layerprune.book.stamp`)
        run.html = build_html(root)
    run.seconds = time.perf_counter() - started
    run.save(root)
    return run


MODEL_PARAMETERS = ("model", "headline_model", "models")


def models_of(parameters: Iterable[Mapping[str, Any]]) -> list[str]:
    """The models the chapters run on (their `model`, `headline_model` and `models` parameters), each once."""
    found: list[str] = []
    for chapter in parameters:
        for name in MODEL_PARAMETERS:
            value = chapter.get(name)
            found += value if isinstance(value, list) else [value] if value else []
    return list(dict.fromkeys(map(str, found)))


def source_commit(root: Path) -> str:
    """The git commit of the book's sources ("+ local changes" when they differ from it), or "" outside git."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short=12", "HEAD")
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "notebooks", "src", "book", "_config.yml")
    return f"{commit} + local changes" if commit and changed else commit


def budget_note(profile: str) -> str:
    """What to expect of a run of `profile` on this machine, said before it starts (from its measured budget)."""
    import torch

    from ..machine import native_bf16_cpu

    measured = measured_budget(profile)
    if measured is None or torch.cuda.is_available():
        return f"[book] profile {profile}"
    minutes, peak, machine = measured["cold_minutes"], measured["peak_gb"], measured["machine"]
    if native_bf16_cpu():
        return (
            f"[book] profile {profile} on a CPU with native bfloat16: a cold build took {minutes} minutes on a "
            f"{machine} (README), seconds once built, minutes once cached; it peaked at {peak} GB of memory"
        )
    return (
        f"[book] profile {profile} on a CPU WITHOUT native bfloat16: the models run in float32 (emulated bfloat16 is "
        f"slower still), 2 to 4 times slower than bf16: expect {2 * minutes / 60:.1f} to {4 * minutes / 60:.1f} "
        f"hours cold; `make book PROFILE=smoke` (a tiny random model, minutes) shows every chapter quickly"
    )


def machine_matmul_gflops() -> float:
    """This machine's matrix-multiply rate (GFLOP/s) in the dtype the models load in here (`models.auto_dtype`)."""
    from ..models import auto_dtype
    from ..speed.utilization import matmul_rate

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return matmul_rate(auto_dtype(device), device) / 1e9


def execute_chapter(
    notebook: Path, output: Path, parameters: Mapping[str, Any], root: Path
) -> tuple[float, float, float]:
    """Run one notebook with papermill; the executed copy replaces `output` only if every cell succeeded. Returns
    the seconds it took, the peak resident memory of its kernel (MiB) and the GFLOPs its models computed.

    A cell that raises a LayerpruneError (bad parameter values) becomes a ChapterError, one line; any other
    exception is re-raised with the cell's traceback.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    started = time.perf_counter()
    print(f"[book] executing {notebook.name} with {dict(parameters)}", flush=True)
    with (
        atomic_file(output) as tmp,
        ChildPeak() as memory,
        tempfile.TemporaryDirectory(prefix="layerprune-flops-") as counted,
        _environment({FLOP_LOG: counted, **KERNEL_ALLOCATOR}),
        kernel_sockets() as connection,
    ):
        try:
            papermill.execute_notebook(
                str(notebook),
                str(tmp),
                parameters=dict(parameters),
                kernel_name="python3",
                cwd=str(root),
                progress_bar=True,
                language="python",
                **connection,
            )
        except PapermillExecutionError as error:
            if error.ename not in _error_names(LayerpruneError):
                raise
            raise ChapterError(
                f"chapter {notebook.stem} stopped in cell {error.exec_count}: {error.ename}: {error.evalue}"
            ) from None
        hide_parameter_cells(tmp)
        gflop = read_flops(counted) / 1e9
    seconds = time.perf_counter() - started
    print(
        f"[book] {notebook.name}: {seconds:.1f} s, kernel peak {memory.peak / 1024:.1f} GiB, {gflop:,.0f} GFLOP",
        flush=True,
    )
    return seconds, memory.peak, gflop


@contextlib.contextmanager
def kernel_sockets() -> Iterator[dict[str, Any]]:
    """papermill options that have the kernel talk over Unix sockets in a fresh private directory, not TCP ports.

    A kernel's TCP ports are found free, released, and bound by the kernel only once it has started, so kernels
    started at once (two books on one machine) can take each other's ports and die before their first cell: of 400
    kernels started eight at a time, 3 failed so in one run here and none in another; none of 800 on sockets
    (`bench/kernel_starts.py`). Windows has no Unix sockets: TCP there.
    """
    if os.name == "nt":
        yield {}
        return
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="layerprune-kernel-") as sockets:
        yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}})}


KERNEL_ALLOCATOR = {"MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "1")}
"""A chapter's kernel allocates from one glibc arena (unless the caller chose otherwise): healing Qwen2.5-Coder-1.5B
then peaks 0.25 GiB lower, at the same speed."""


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """`values` set in this process's environment (and so in the kernels it starts) within the block."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def hide_parameter_cells(executed: Path) -> None:
    """Tag the notebook's own parameters cell and papermill's injected one `remove-cell`: the page shows the values
    the chapter ran with once, in its provenance table."""
    notebook = json.loads(executed.read_text())
    for cell in notebook["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    executed.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")


def _error_names(base: type) -> set[str]:
    """The names of `base` and all its subclasses."""
    return {base.__name__}.union(*(_error_names(sub) for sub in base.__subclasses__()))


def build_html(root: Path, strict: bool = True) -> Path:
    """Build the HTML book with Jupyter Book 1.x from the top-level _config.yml and _toc.yml."""
    shutil.rmtree(root / "_build" / "html", ignore_errors=True)
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(root), "--path-output", str(root)]
    if strict:
        command += ["-W", "-n", "--keep-going"]
    print(f"[book] {' '.join(command)}", flush=True)
    result = subprocess.run(command, cwd=root, check=False)
    if result.returncode != 0:
        raise InvalidInputError(f"the Jupyter Book build failed (exit {result.returncode}); see the log above")
    return root / "_build" / "html"
