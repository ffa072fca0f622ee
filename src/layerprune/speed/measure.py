"""Timing and memory, measured fairly: variants run side by side in rotating rounds (a load that comes and goes
hits all of them alike), wall time includes queued GPU work, peak memory is read from the CUDA allocator or the
kernel's resident high-water mark in a fresh interpreter."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import torch

T = TypeVar("T")
K = TypeVar("K")
MIB = 2**20

# glibc: allocations of 64 KiB and more are mmap-ed and unmapped when freed, so the resident set follows the
# live tensors (setting the threshold also switches off glibc's dynamic threshold, which would hide them).
_MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "TQDM_DISABLE": "1"}
_CHILD = (
    "import json, sys\n"
    "from layerprune import speed\n"
    "result = getattr(speed, sys.argv[1])(**json.loads(sys.argv[2]))\n"
    "open(sys.argv[3], 'w').write(json.dumps(result))\n"
)


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


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """`use_threads` inside the block only."""
    previous = torch.get_num_threads()
    try:
        yield use_threads(threads)
    finally:
        torch.set_num_threads(previous)


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


def _status_kib(field_name: str, pid: int | str = "self") -> int:
    found = re.search(rf"^{field_name}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
    return int(found.group(1))


class ChildPeak:
    """The largest resident high-water mark (VmHWM, MiB) of any process this one started while inside ``with``
    (a notebook's kernel, say): polled every `interval` seconds, so what a child needed at most while it ran.
    NaN where /proc cannot be read."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = math.nan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> ChildPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        import psutil

        while True:
            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(OSError, AttributeError):
                    mib = _status_kib("VmHWM", child.pid) / 1024
                    self.peak = mib if math.isnan(self.peak) else max(self.peak, mib)
            if self._stop.wait(self.interval):
                return


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
