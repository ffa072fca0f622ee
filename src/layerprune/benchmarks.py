"""What the method costs and what pruning buys, measured: profiling against a plain forward pass and against the
one-pass-per-block-size approach of existing tools, prefill and greedy-decoding throughput of pruned models
against their ideal speedup, healing and evaluation throughput, and peak memory.

Timings are taken side by side in one process: every variant runs once per round, the order rotating from round
to round, so a load that comes and goes on a shared machine hits all of them alike. A ratio is the median of the
per-round ratios; a throughput is the best round. Peak memory is measured one variant at a time: on CUDA from the
allocator's peak; on a CPU in a fresh interpreter (`in_subprocess`) from the kernel's high-water mark of resident
memory, reset just before the measured work, with large allocations forced to mmap so that freed memory leaves
the resident set at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import inspect
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import numpy as np
import pandas as pd
import torch
from torch import nn

from .adapters import get_adapter
from .cache import stable_hash
from .data import corpus_blocks
from .identity import model_identity
from .loss import model_device
from .memo import cached, decode_records, encode_records, tensor_digest
from .selection import layers_for_fraction, profile_free_block, select_block
from .similarity import DistanceProfile, pair_distance, profile_distances
from .surgery import prune

T = TypeVar("T")
K = TypeVar("K")
MIB = 2**20
PROFILE_VARIANTS = ("forward", "profile_distances", "hidden_states")
# glibc: allocations of 64 KiB and more are mmap-ed and unmapped when freed, so the resident set follows the
# live tensors (setting the threshold also switches off glibc's dynamic threshold, which would hide them).
_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "TQDM_DISABLE": "1"}
_CHILD = (
    "import json, sys\n"
    "from layerprune import benchmarks\n"
    "result = getattr(benchmarks, sys.argv[1])(**json.loads(sys.argv[2]))\n"
    "open(sys.argv[3], 'w').write(json.dumps(result))\n"
)


# ---------------------------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, torch threads, memory, GPU, load, versions."""
    import transformers

    gpu = "none"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "memory GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu,
        "load average (1 min)": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def timing_machine() -> dict[str, Any]:
    """What a timing depends on (`machine()` without the passing load): part of the key of a cached timing."""
    return {key: value for key, value in machine().items() if key != "load average (1 min)"}


def describe_machine() -> str:
    """`machine()` as one line."""
    return ", ".join(f"{key}: {value}" for key, value in machine().items())


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


# ------------------------------------------------------------------------------------------ timing, memory


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Wall time of the work inside ``with`` (GPU work included), added up over every use."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> Stopwatch:
        synchronize(self.device)
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._started


def use_threads(threads: int) -> int:
    """Set torch's CPU threads (0 keeps torch's default, every core) and return the count; `in_subprocess`
    children get the same. On a machine shared with other jobs, 1 thread gives steadier timings: threads that
    must wait for each other at every operation stall whenever another job holds a core."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def timed(function: Callable[[], object], device: torch.device) -> Callable[[], float]:
    """A callable that runs `function` and returns its wall time in seconds (GPU work included)."""

    def run() -> float:
        with Stopwatch(device) as watch:
            function()
        return watch.seconds

    return run


def rounds(variants: Mapping[K, Callable[[], T]], repeats: int, *, progress: bool = True) -> dict[K, list[T]]:
    """Call every variant once per round for `repeats` rounds, the order rotating by one each round (with a
    progress bar on a terminal)."""
    from tqdm.auto import tqdm

    names = list(variants)
    results: dict[K, list[T]] = {name: [] for name in names}
    for index in tqdm(range(repeats), desc="rounds", disable=None if progress else True, leave=False):
        for offset in range(len(names)):
            name = names[(index + offset) % len(names)]
            results[name].append(variants[name]())
    return results


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median over rounds of numerator / denominator (each pair measured in the same round)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


@dataclass
class PeakMemory:
    """Peak memory (MiB) of the work inside ``with``: the CUDA allocator's peak on a GPU, the resident high-water
    mark (VmHWM, reset on entry) on a Linux CPU, NaN where neither can be read. `baseline` is the level on entry."""

    device: torch.device
    baseline: float = math.nan
    peak: float = math.nan

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if reset_peak(self.device):
            self.baseline = current_mib(self.device)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not math.isnan(self.baseline):
            self.peak = peak_mib(self.device)

    @property
    def increase(self) -> float:
        """Peak minus the level on entry: the memory the work itself needed."""
        return self.peak - self.baseline

    def as_dict(self) -> dict[str, float]:
        return {"peak MiB": self.peak, "increase MiB": self.increase}


def reset_peak(device: torch.device) -> bool:
    """Restart the peak at the current level; False where it cannot be measured (a CPU without Linux /proc)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return True
    return _reset_high_water_mark()


def current_mib(device: torch.device) -> float:
    """Memory in use now: allocated by torch on CUDA, resident on a CPU."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / MIB
    return _status_kib("VmRSS") / 1024


def peak_mib(device: torch.device) -> float:
    """The peak since the last `reset_peak`."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / MIB
    return _status_kib("VmHWM") / 1024


def _reset_high_water_mark() -> bool:
    """Reset this process's VmHWM to its current resident size (Linux >= 4.0); False where that is impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _status_kib(field_name: str) -> int:
    found = re.search(rf"^{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(found.group(1))


@contextlib.contextmanager
def weights_in_memory() -> Iterator[None]:
    """Have transformers read safetensors weights into memory instead of memory-mapping the files, so that a
    model's weights are resident from the start. (A memory-mapped weight counts in the resident set only once it
    is touched, and a model quantized on loading keeps the touched pages of its full-precision file.)"""
    from transformers import AutoModelForCausalLM

    load = AutoModelForCausalLM.from_pretrained.__func__

    def from_pretrained(cls: type, *args: Any, **kwargs: Any) -> Any:
        return load(cls, *args, **{"disable_mmap": True, **kwargs})

    with mock.patch.object(AutoModelForCausalLM, "from_pretrained", classmethod(from_pretrained)):
        yield


def in_subprocess(function: str, **kwargs: Any) -> dict[str, Any]:
    """`function(**kwargs)` of this module run in a fresh interpreter (so its memory is its own), with as many
    torch threads as this process (see `use_threads`); its JSON result."""
    env = os.environ | _MEMORY_ENV | {"OMP_NUM_THREADS": str(torch.get_num_threads())}
    with tempfile.TemporaryDirectory(prefix="layerprune-bench-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, "-c", _CHILD, function, json.dumps(kwargs), str(result)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"benchmark subprocess {function}({kwargs}) failed:\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


# ------------------------------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class Check:
    """A measured value against its goal."""

    measure: str
    value: float
    target: float
    higher_is_better: bool

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        goal = f"{'>=' if self.higher_is_better else '<='} {self.target:g}"
        return {"measure": self.measure, "value": _significant(self.value), "goal": goal, "met": self.met}


@dataclass
class Report:
    """A titled table of measurements (one dict per row) and the goals they are held to."""

    title: str
    rows: list[dict[str, Any]]
    checks: list[Check] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """The rows, floats rounded to 4 significant digits (so a saved CSV shows what the page shows)."""
        return pd.DataFrame(self.rows).map(_significant)

    def goals(self) -> pd.DataFrame:
        return pd.DataFrame([check.as_dict() for check in self.checks], columns=["measure", "value", "goal", "met"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (`from_dict` is the inverse)."""
        rows = encode_records([{key: _plain(value) for key, value in row.items()} for row in self.rows])
        return {"title": self.title, "rows": rows, "checks": [dataclasses.asdict(check) for check in self.checks]}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Report:
        return cls(payload["title"], decode_records(payload["rows"]), [Check(**check) for check in payload["checks"]])

    def text(self) -> str:
        """The report as plain text, for the bench scripts."""
        parts = [f"== {self.title}", self.table().to_string(index=False)]
        if self.checks:
            parts += ["-- goals", self.goals().to_string(index=False)]
        return "\n".join(parts) + "\n"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def key_part(value: Any) -> Any:
    """A JSON-able stand-in for an argument in a cache key: a model's identity, a tensor's or profile's digest."""
    if isinstance(value, nn.Module):
        return model_identity(value)
    if isinstance(value, torch.Tensor):
        return tensor_digest(value)
    if isinstance(value, DistanceProfile):
        return stable_hash(value.to_dict())
    return value


def cacheable(kind: str) -> Callable[[Callable[..., Report]], Callable[..., Report]]:
    """Give a benchmark a `cache` keyword: with `cache=True` its report is cached like the book's other results,
    keyed by every argument (models by identity, tensors by digest) and by this machine (`timing_machine`), so a
    rerun with the same parameters on the same machine shows the numbers measured the first time."""

    def decorate(function: Callable[..., Report]) -> Callable[..., Report]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args: Any, cache: bool = False, **kwargs: Any) -> Report:
            if not cache:
                return function(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            key = {name: key_part(value) for name, value in bound.arguments.items() if name != "progress"}
            key["machine"] = timing_machine()
            measure = functools.partial(function, *args, **kwargs)
            return cached(f"bench-{kind}", key, measure, encode=Report.to_dict, decode=Report.from_dict)

        return run

    return decorate


def _significant(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float | np.floating) and math.isfinite(value) and value != 0:
        return round(float(value), digits - 1 - math.floor(math.log10(abs(value))))
    return value


# ------------------------------------------------------------------------------------------------ profiling


def corpus_tokens(
    tokenizer, split: str, count: int, block_size: int, seed: int = 0, corpus: str = "sotu"
) -> torch.Tensor:
    """`count` blocks of `block_size` tokens from one split of a corpus (the embedded one by default)."""
    limits = {split: count}
    return corpus_blocks(tokenizer, corpus, block_size=block_size, max_blocks=limits, splits=(split,), seed=seed)[split]


def num_layers(model: nn.Module) -> int:
    return len(get_adapter(model).decoder_layers(model))


@torch.no_grad()
def plain_forward(model: nn.Module, blocks: torch.Tensor, batch_size: int) -> None:
    """The causal LM's ordinary forward pass, ``model(input_ids=batch)``, over all blocks."""
    device = model_device(model)
    for batch in blocks.split(batch_size):
        model(input_ids=batch.to(device))


@torch.no_grad()
def hidden_state_distances(model: nn.Module, blocks: torch.Tensor, n: int, batch_size: int) -> np.ndarray:
    """D[n, l] for one block size n, the way existing tools get it: a forward pass with
    ``output_hidden_states=True`` that keeps every layer's states at every token, then the last token's angular
    distances; one such pass per n. (Its last state is the one after the final norm, as those tools use it.)"""
    device = model_device(model)
    total = torch.zeros(num_layers(model) + 1 - n, dtype=torch.float64, device=device)
    for batch in blocks.split(batch_size):
        states = model(input_ids=batch.to(device), output_hidden_states=True).hidden_states
        last = nn.functional.normalize(torch.stack([s[:, -1] for s in states]).double(), dim=-1)
        total += pair_distance(last[:-n], last[n:]).sum(-1)
    return (total / blocks.shape[0]).cpu().numpy()


def run_variant(model: nn.Module, blocks: torch.Tensor, variant: str, batch_size: int, n: int = 1) -> None:
    """One of PROFILE_VARIANTS over all blocks; "hidden_states" is its pass for block size `n`."""
    if variant == "forward":
        plain_forward(model, blocks, batch_size)
    elif variant == "profile_distances":
        profile_distances(model, blocks, batch_size=batch_size, progress=False)
    elif variant == "hidden_states":
        hidden_state_distances(model, blocks, n, batch_size)
    else:
        raise ValueError(f"unknown variant {variant!r}; variants: {PROFILE_VARIANTS}")


def spread(count: int, total: int) -> list[int]:
    """`count` block sizes spread evenly over 1..`total` (all of them when count >= total)."""
    return sorted({round(float(x)) for x in np.linspace(1, total, min(count, total))})


@cacheable("profiling")
def profiling_speed(
    model: nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 8,
    repeats: int = 3,
    baseline_passes: int | None = None,
    progress: bool = True,
) -> Report:
    """`profile_distances` (all n in one pass) against a plain forward pass over the same blocks, and against
    `hidden_state_distances` run once per n (L passes for all n).

    `baseline_passes` block sizes (spread over 1..L) are run per round and their time scaled by L / passes, since
    every pass costs the same; None runs all L. `model_identity` (which `profile_distances` calls to label its
    result) is timed on its own too, to show how much of the profile's time it is.
    """
    device = model_device(model)
    layers = num_layers(model)
    sizes = spread(baseline_passes or layers, layers)
    plain_forward(model, blocks[:batch_size], batch_size)
    times = rounds(
        {
            "forward": timed(lambda: run_variant(model, blocks, "forward", batch_size), device),
            "profile_distances": timed(lambda: run_variant(model, blocks, "profile_distances", batch_size), device),
            "hidden_states": timed(
                lambda: [hidden_state_distances(model, blocks, n, batch_size) for n in sizes], device
            ),
            "model_identity": timed(lambda: model_identity(model), device),
        },
        repeats,
        progress=progress,
    )
    scale = layers / len(sizes)
    times["hidden_states"] = [t * scale for t in times["hidden_states"]]
    tokens = blocks.numel()
    labels = {
        "forward": ("model(input_ids=batch), one pass", "1 of 1"),
        "profile_distances": ("profile_distances: every n, one pass", "1 of 1"),
        "hidden_states": ("output_hidden_states=True, one pass per n", f"{len(sizes)} of {layers}"),
        "model_identity": ("model_identity (inside profile_distances)", "-"),
    }
    rows = [
        {
            "method": labels[name][0],
            "passes timed": labels[name][1],
            "seconds (best)": min(values),
            "tokens/s (best)": tokens / min(values) if name != "model_identity" else math.nan,
            "time / forward (median)": paired_ratio(values, times["forward"]),
        }
        for name, values in times.items()
    ]
    profile_cost = paired_ratio(times["profile_distances"], times["forward"])
    without_identity = [p - i for p, i in zip(times["profile_distances"], times["model_identity"], strict=True)]
    return Report(
        f"profiling: {layers} layers, {blocks.shape[0]} blocks x {blocks.shape[1]} tokens, batch {batch_size}, "
        f"{repeats} rounds",
        rows,
        [
            Check("profile_distances time / forward time", profile_cost, 1.10, higher_is_better=False),
            Check(
                "(profile_distances - model_identity) / forward",
                paired_ratio(without_identity, times["forward"]),
                1.10,
                higher_is_better=False,
            ),
            Check(
                "hidden_states (all n) time / profile_distances time",
                paired_ratio(times["hidden_states"], times["profile_distances"]),
                2.0,
                higher_is_better=True,
            ),
        ],
    )


def variant_memory(model: nn.Module, blocks: torch.Tensor, variant: str, batch_size: int) -> dict[str, Any]:
    """Peak memory of one profiling variant over all blocks, in this process (accurate on CUDA; on a CPU call
    `profiling_memory_of`, which runs in a fresh interpreter). A forward pass over a few tokens first brings
    every weight into memory (a model loaded from safetensors may be memory-mapped, and paged in on first use)
    and initialises the kernels, so that neither counts as the variant's."""
    plain_forward(model, blocks[:1, :8], 1)
    with PeakMemory(model_device(model)) as memory:
        run_variant(model, blocks, variant, batch_size)
    return {"variant": variant, **memory.as_dict()}


def profiling_memory_of(
    model: str,
    variants: list[str],
    block_size: int,
    count: int,
    batch_size: int,
    seed: int,
    corpus: str = "sotu",
) -> dict[str, list[dict[str, Any]]]:
    """`variant_memory` of each variant in turn, for a model loaded by name, on profile blocks of a corpus
    (the subprocess entry of `profiling_memory`)."""
    from .models import load_model

    torch.manual_seed(seed)
    with weights_in_memory():
        lm, tokenizer = load_model(model)
    blocks = corpus_tokens(tokenizer, "profile", count, block_size, seed, corpus)
    return {"rows": [variant_memory(lm, blocks, variant, batch_size) for variant in variants]}


def memory_report(rows: Sequence[Mapping[str, Any]], title: str) -> Report:
    """Peak memory per profiling variant, with the goal that the one-pass-per-n approach needs more than
    `profile_distances`: in peak, and (where the profile needs any) in the increase over the loaded model."""
    by_variant = {row["variant"]: row for row in rows}
    checks = []
    if {"hidden_states", "profile_distances"} <= set(by_variant):
        baseline, ours = by_variant["hidden_states"], by_variant["profile_distances"]
        checks.append(
            Check("hidden_states / profile_distances peak", baseline["peak MiB"] / ours["peak MiB"], 1.0, True)
        )
        if ours["increase MiB"] > 0:
            ratio = baseline["increase MiB"] / ours["increase MiB"]
            checks.append(Check("hidden_states / profile_distances peak increase", ratio, 1.0, True))
    return Report(title, [dict(row) for row in rows], checks)


@cacheable("memory")
def profiling_memory(
    model: str,
    *,
    block_size: int,
    count: int,
    batch_size: int,
    seed: int = 0,
    corpus: str = "sotu",
    variants: Sequence[str] = PROFILE_VARIANTS,
) -> Report:
    """Peak memory of each profiling variant, measured in a fresh interpreter that has loaded the model: one
    variant after the other, each after a reset of the peak (on a CPU, with large allocations mmap-ed, this
    matched one fresh process per variant within 2% on smollm2-135m, in either order)."""
    result = in_subprocess(
        "profiling_memory_of",
        model=model,
        variants=list(variants),
        block_size=block_size,
        count=count,
        batch_size=batch_size,
        seed=seed,
        corpus=corpus,
    )
    title = f"profiling peak memory: {model}, {count} blocks x {block_size} tokens, batch {batch_size}"
    return memory_report(result["rows"], title)


# ------------------------------------------------------------------------------------------ pruned inference


class LayerClock:
    """Time spent inside each decoder layer while attached (forward pre- and post-hooks; CUDA events on a GPU)."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = get_adapter(model).decoder_layers(model)
        self.cuda = model_device(model).type == "cuda"
        self._seconds = [0.0] * len(self.layers)
        self._open: list[Any] = [None] * len(self.layers)
        self._spans: list[tuple[int, Any, Any]] = []
        self._handles: list[Any] = []

    def __enter__(self) -> LayerClock:
        for index, layer in enumerate(self.layers):
            self._handles.append(layer.register_forward_pre_hook(self._start(index)))
            self._handles.append(layer.register_forward_hook(self._stop(index)))
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def seconds(self) -> list[float]:
        """Seconds spent in each layer so far."""
        if self._spans:
            torch.cuda.synchronize()
            for index, start, stop in self._spans:
                self._seconds[index] += start.elapsed_time(stop) / 1000
            self._spans.clear()
        return list(self._seconds)

    def _now(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _start(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            self._open[index] = self._now()

        return hook

    def _stop(self, index: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            stop = self._now()
            if self.cuda:
                self._spans.append((index, self._open[index], stop))
            else:
                self._seconds[index] += stop - self._open[index]

        return hook


def ideal_speedup(layer_seconds: Sequence[float], total_seconds: float, removed: Iterable[int]) -> float:
    """total / (total - time in the removed layers): the speedup if removing layers saved exactly their time."""
    saved = sum(layer_seconds[i] for i in removed)
    return total_seconds / (total_seconds - saved)


def efficiency(
    full_seconds: Sequence[float], pruned_seconds: Sequence[float], shares: Sequence[float], removed: Iterable[int]
) -> dict[str, float]:
    """The measured speedup (median over rounds of full / pruned time), the ideal one (`ideal_speedup` with each
    layer's share of the unpruned model's time) and efficiency = measured / ideal."""
    speedup = paired_ratio(full_seconds, pruned_seconds)
    ideal = ideal_speedup(shares, 1.0, removed)
    return {"speedup": speedup, "ideal": ideal, "efficiency": speedup / ideal}


@torch.no_grad()
def prefill(model: nn.Module, prompt: torch.Tensor) -> tuple[Any, torch.Tensor]:
    """The prompt through the model with the KV cache on, as generation does it (logits of the last token only);
    returns the cache and the greedy next token."""
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    return out.cache, out.logits[:, -1].argmax(-1, keepdim=True)


@torch.no_grad()
def decode(model: nn.Module, cache: Any, token: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` greedy decoding steps, one token per sequence each, reusing and growing the KV cache."""
    for _ in range(steps):
        out = model(input_ids=token, cache=cache, use_cache=True)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
    return token


def generation_seconds(model: nn.Module, prompt: torch.Tensor, steps: int) -> tuple[float, float]:
    """(prefill seconds, decoding seconds) of one greedy generation of `steps` new tokens."""
    device = model_device(model)
    ids = prompt.to(device)
    with Stopwatch(device) as prefilling:
        cache, token = prefill(model, ids)
    with Stopwatch(device) as decoding:
        decode(model, cache, token, steps)
    return prefilling.seconds, decoding.seconds


def layer_shares(model: nn.Module, prompt: torch.Tensor, steps: int, repeats: int) -> dict[str, list[float]]:
    """Per phase ("prefill", "decode"): each layer's share of the phase's time in the unpruned model, timed by
    `LayerClock` in each of `repeats` generations; the median over them (robust to a stall on a busy machine)."""
    device = model_device(model)
    ids = prompt.to(device)
    runs: dict[str, list[list[float]]] = {"prefill": [], "decode": []}
    for _ in range(repeats):
        clocks = {phase: LayerClock(model) for phase in runs}
        watches = {phase: Stopwatch(device) for phase in runs}
        with clocks["prefill"], watches["prefill"]:
            cache, token = prefill(model, ids)
        with clocks["decode"], watches["decode"]:
            decode(model, cache, token, steps)
        for phase, shares in runs.items():
            shares.append([s / watches[phase].seconds for s in clocks[phase].seconds()])
    return {phase: np.median(shares, axis=0).tolist() for phase, shares in runs.items()}


def pruned_models(
    model: nn.Module, fractions: Sequence[float], profile: DistanceProfile | None, seed: int = 0
) -> dict[float, tuple[tuple[int, ...], nn.Module]]:
    """For each fraction: the removed layers and the pruned model (the "similarity" block of `profile`, or the
    "last" block without one); fraction 0 is the model itself."""
    layers = num_layers(model)
    pruned: dict[float, tuple[tuple[int, ...], nn.Module]] = {}
    for fraction in fractions:
        n = layers_for_fraction(layers, fraction)
        if n == 0:
            pruned[fraction] = ((), model)
            continue
        if profile is not None:
            chosen = select_block(profile, n, "similarity", seed=seed)
        else:
            chosen = profile_free_block(layers, n, "last", seed=seed)
        pruned[fraction] = (chosen.layers, prune(model, chosen.layers, strategy=chosen.strategy))
    return pruned


@cacheable("inference")
def inference_speed(
    model: nn.Module,
    prompt: torch.Tensor,
    *,
    new_tokens: int = 32,
    fractions: Sequence[float] = (0.0, 0.25, 0.5),
    profile: DistanceProfile | None = None,
    repeats: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> Report:
    """Prefill and greedy-decoding tokens/s of the model with each fraction of its layers removed, and the
    efficiency of each speedup: measured speedup / ideal speedup, where the ideal is 1 / (1 - share) and share is
    the removed layers' share of the unpruned model's time in that phase (`layer_shares`)."""
    if 0.0 not in fractions:
        fractions = (0.0, *fractions)
    variants = pruned_models(model, fractions, profile, seed)
    generation_seconds(model, prompt[:, :8], 2)
    shares = layer_shares(model, prompt, new_tokens, repeats)
    times = rounds(
        {f: (lambda m=m: generation_seconds(m, prompt, new_tokens)) for f, (_, m) in variants.items()},
        repeats,
        progress=progress,
    )
    rows = []
    checks = []
    phases = (("prefill", 0, prompt.numel()), ("decode", 1, prompt.shape[0] * new_tokens))
    for fraction, (removed, pruned) in variants.items():
        row: dict[str, Any] = {
            "fraction": fraction,
            "layers": num_layers(pruned),
            "removed": " ".join(map(str, removed)) or "-",
            "parameters": sum(p.numel() for p in pruned.parameters()),
        }
        for phase, index, tokens in phases:
            mine = [t[index] for t in times[fraction]]
            gains = efficiency([t[index] for t in times[0.0]], mine, shares[phase], removed)
            row[f"{phase} tokens/s"] = tokens / min(mine)
            row |= {f"{phase} {name}": value for name, value in gains.items()}
            if removed:
                checks.append(Check(f"{phase} efficiency, {fraction:.0%} removed", gains["efficiency"], 0.9, True))
        rows.append(row)
    title = (
        f"pruned inference: batch {prompt.shape[0]}, prompt {prompt.shape[1]} tokens, {new_tokens} new tokens, "
        f"{repeats} rounds"
    )
    return Report(title, rows, checks)


# ------------------------------------------------------------------------------------- healing, evaluation


def healing_run(
    model: str,
    quantization: str | None,
    steps: int,
    batch_size: int,
    block_size: int,
    seed: int = 0,
    corpus: str = "sotu",
) -> dict[str, Any]:
    """`heal` from the model's name (loaded as it trains: 4-bit, 8-bit or full precision) for a few steps on
    corpus blocks (subprocess entry): its training tokens/s, and its memory over the level before the call, split
    at the first forward call: the loaded model (with LoRA), the peak while loading, the peak while training."""
    from .healing import heal
    from .models import load_tokenizer, resolve_source

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(resolve_source(model))
    blocks = corpus_tokens(tokenizer, "heal", steps * batch_size, block_size, seed, corpus)
    memory = PeakMemory(device)
    loading: dict[str, float] = {}

    def loaded(module: nn.Module, args: tuple) -> None:
        handle.remove()
        loading["model MiB"] = current_mib(device) - memory.baseline
        loading["load peak MiB"] = peak_mib(device) - memory.baseline
        reset_peak(device)

    handle = nn.modules.module.register_module_forward_pre_hook(loaded)
    try:
        with weights_in_memory(), memory:
            result = heal(
                model,
                tokenizer,
                blocks,
                quantization=quantization,
                steps=steps,
                batch_size=batch_size,
                warmup=0,
                seed=seed,
                progress=False,
            )
    finally:
        handle.remove()
    return {
        "method": f"QLoRA {quantization}" if quantization else "LoRA (full-precision base)",
        "steps": steps,
        "tokens": result.tokens,
        "train seconds": result.seconds,
        "tokens/s": result.tokens_per_second,
        **loading,
        "train peak MiB": memory.increase,
    }


def healing_speed(
    model: str,
    *,
    quantizations: Sequence[str | None] = ("4bit", "8bit", None),
    steps: int = 3,
    batch_size: int = 2,
    block_size: int = 128,
    repeats: int = 1,
    seed: int = 0,
) -> Report:
    """`healing_run` for each quantization, each in its own fresh interpreter, `repeats` rounds in rotating order;
    each variant's best round, and its tokens/s relative to the last variant's (plain LoRA by default)."""
    runs = rounds(
        {
            str(quantization): functools.partial(
                in_subprocess,
                "healing_run",
                model=model,
                quantization=quantization,
                steps=steps,
                batch_size=batch_size,
                block_size=block_size,
                seed=seed,
            )
            for quantization in quantizations
        },
        repeats,
        progress=False,
    )
    rows = [max(results, key=lambda run: run["tokens/s"]) for results in runs.values()]
    for row in rows:
        row[f"tokens/s / {rows[-1]['method']}"] = row["tokens/s"] / rows[-1]["tokens/s"]
    return Report(f"healing: {model}, {steps} steps of {batch_size} x {block_size} tokens, {repeats} round(s)", rows)


def evaluation_speed(
    model: nn.Module,
    tokenizer,
    *,
    task: str = "arc_easy",
    limit: int = 20,
    batch_size: int = 8,
    repeats: int = 2,
    progress: bool = True,
) -> Report:
    """lm-eval (`evaluate`, cache off) against a raw forward pass over exactly the batches lm-eval fed the model
    (recorded by a hook during a first, untimed run)."""
    from .evaluation import evaluate

    batches: list[torch.Tensor] = []

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        batches.append((args[0] if args else kwargs["input_ids"]).detach().clone())

    def run_evaluate() -> None:
        evaluate(model, tokenizer, [task], limit=limit, batch_size=batch_size, cache=False, progress=False)

    def replay() -> None:
        with torch.no_grad():
            for batch in batches:
                model(input_ids=batch)

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        run_evaluate()
    finally:
        handle.remove()
    device = model_device(model)
    times = rounds(
        {"evaluate": timed(run_evaluate, device), "forward": timed(replay, device)}, repeats, progress=progress
    )
    tokens = sum(batch.numel() for batch in batches)
    rows = [
        {
            "method": f"lm-eval evaluate({task}, limit={limit})" if name == "evaluate" else "forward, same batches",
            "batches": len(batches),
            "tokens (padded)": tokens,
            "seconds (best)": min(values),
            "tokens/s (best)": tokens / min(values),
            "time / forward (median)": paired_ratio(values, times["forward"]),
        }
        for name, values in times.items()
    ]
    return Report(f"evaluation: {task}, {limit} questions, batch {batch_size}, {repeats} rounds", rows)


# ------------------------------------------------------------------------------------------------- figures


def speedup_figure(report: Report):
    """Measured and ideal speedup against the fraction of layers removed, prefill and decoding side by side."""
    import matplotlib.pyplot as plt

    table = report.table()
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, phase in zip(axes, ("prefill", "decode"), strict=True):
        ax.plot(table["fraction"], table[f"{phase} speedup"], marker="o", label="measured")
        ax.plot(table["fraction"], table[f"{phase} ideal"], linestyle="--", marker=".", label="ideal")
        ax.plot(table["fraction"], 1 / (1 - table["fraction"]), color="gray", linestyle=":", label="1 / (1 - fraction)")
        ax.set(xlabel="fraction of layers removed", ylabel="speedup over the unpruned model", title=phase)
        ax.legend(fontsize=8)
    return figure
