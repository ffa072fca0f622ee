"""The machine results were measured on: CPU, cores, native bfloat16, memory, GPU, load and versions."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import torch

LOAD_KEY = "load average (1 min)"


def release_memory() -> None:
    """Collect garbage and hand the freed heap back to the system (glibc's malloc_trim): without it, models
    copied and freed one after another pile up in the process's resident memory."""
    gc.collect()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (else what `platform` knows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def _cpu_has(probe: str) -> bool:
    """torch's probe `torch.cpu.<probe>()` for a CPU feature; False where this torch has no such probe."""
    return bool(getattr(torch.cpu, probe, lambda: False)())


def amx_cpu() -> bool:
    """Whether the CPU has AMX tiles, which multiply bfloat16 matrices several times faster."""
    return _cpu_has("_is_amx_tile_supported")


def native_bf16_cpu() -> bool:
    """Whether the CPU computes bfloat16 natively (AMX tiles or AVX512-BF16); without, bf16 is emulated and slow."""
    return amx_cpu() or _cpu_has("_is_avx512_bf16_supported")


def gpu_name() -> str:
    """The first CUDA device with its memory, or "none"."""
    if not torch.cuda.is_available():
        return "none"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"


def machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, torch threads, native bf16, memory, GPU, load, versions."""
    import transformers

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch threads": torch.get_num_threads(),
        "cpu capability": torch.backends.cpu.get_cpu_capability(),
        "native bf16": native_bf16_cpu(),
        "memory GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "gpu": gpu_name(),
        LOAD_KEY: round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def timing_machine() -> dict[str, Any]:
    """What a timing depends on (`machine()` without the passing load): part of the key of a cached timing."""
    return {key: value for key, value in machine().items() if key != LOAD_KEY}


def describe_machine() -> str:
    """`machine()` as one line."""
    return ", ".join(f"{key}: {value}" for key, value in machine().items())


def machine_line() -> str:
    """A short line for the provenance box: OS and CPU, cores, whether bf16 is native, accelerator, Python."""
    bf16 = "native bf16" if native_bf16_cpu() else "no native bf16"
    gpu = gpu_name()
    accelerator = "no GPU" if gpu == "none" else gpu
    return (
        f"{platform.system()} {cpu_name()}, {os.cpu_count()} cores ({bf16}), {accelerator}, "
        f"Python {platform.python_version()}"
    )
