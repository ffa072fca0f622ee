"""What profiling costs: `profile_distances` (every block size in one pass) against a plain forward pass and
against one `output_hidden_states` pass per block size, in time and in peak memory."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import model_device, num_layers
from ..cache import model_identity
from ..data import corpus_blocks
from ..similarity import pair_distance, profile_distances
from .measure import (
    PeakMemory,
    in_subprocess,
    paired_ratio,
    rounds,
    timed,
    weights_in_memory,
)
from .report import Check, Report, cacheable

PROFILE_VARIANTS = ("forward", "profile_distances", "hidden_states")


def corpus_tokens(
    tokenizer, split: str, count: int, block_size: int, seed: int = 0, corpus: str = "sotu"
) -> torch.Tensor:
    """`count` blocks of `block_size` tokens from one split of a corpus (the embedded one by default)."""
    limits = {split: count}
    return corpus_blocks(tokenizer, corpus, block_size=block_size, max_blocks=limits, splits=(split,), seed=seed)[split]


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
    from ..models import load_model

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
