"""How much of the machine the method uses: this machine's matrix-multiply rate in the model's dtype, the model's
FLOPs per token, and the FLOP rate a scoring pass (what a sweep runs for every pruned model) and a healing step
achieve, as a fraction of that rate. It also turns the book's work into a floor: tokens x FLOPs per token / rate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..adapters import get_adapter, model_device, num_layers
from ..loss import heldout_loss
from .measure import Stopwatch
from .report import Check, Report

UTILIZATION_GOAL = 0.5
"""The share of the matmul rate a pass should reach."""


def matmul_rate(dtype: torch.dtype, device: torch.device, *, size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of a square `size` matrix product in `dtype` on `device` (the best of `repeats`, after a warm-up)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=generator).to(device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        with Stopwatch(device) as watch:
            torch.mm(a, b)
        best = min(best, watch.seconds)
    return 2 * size**3 / best


def flops_per_token(model: nn.Module, sequence: int, *, head: bool = True) -> float:
    """Forward FLOPs per token: 2 per weight of every linear layer of the decoder (and of the LM head, if `head`),
    and the attention scores and their weighted sum over a causal context of `sequence` tokens (on average half
    of it): 2 x 2 x layers x hidden x sequence / 2."""
    decoder = get_adapter(model).decoder_layers(model)
    weights = sum(m.weight.numel() for layer in decoder for m in layer.modules() if isinstance(m, nn.Linear))
    if head:
        weights += model.get_output_embeddings().weight.numel()
    hidden = model.config.hidden_size
    return 2 * weights + 2 * num_layers(model) * hidden * sequence


def scoring_rate(model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 8) -> dict[str, float]:
    """Tokens/s and FLOP/s of the held-out-loss pass (every position scored: the LM head everywhere)."""
    heldout_loss(model, blocks[:batch_size], batch_size=batch_size, progress=False)  # warm-up
    with Stopwatch(model_device(model)) as watch:
        heldout_loss(model, blocks, batch_size=batch_size, progress=False)
    tokens = blocks.numel()
    return {
        "tokens/s": tokens / watch.seconds,
        "FLOP/s": tokens * flops_per_token(model, blocks.shape[1]) / watch.seconds,
    }


def utilization_report(
    forward: float, scoring: Mapping[str, float], healing: Mapping[str, Any], block_size: int, rate: float, dtype: str
) -> Report:
    """The two passes against the matmul rate (`forward`: FLOPs per token at `block_size`). A LoRA step on a frozen
    base costs about two forward passes (the forward, and the backward through the activations; no weight
    gradients), so its FLOPs are counted as 2x."""
    rows = [
        {
            "pass": "scoring (held-out loss, as a sweep scores each pruned model)",
            "tokens/s": scoring["tokens/s"],
            "GFLOP/s": scoring["FLOP/s"] / 1e9,
            "share of matmul rate": scoring["FLOP/s"] / rate,
        },
        {
            "pass": f"healing step ({healing['method']})",
            "tokens/s": healing["tokens/s"],
            "GFLOP/s": 2 * forward * healing["tokens/s"] / 1e9,
            "share of matmul rate": 2 * forward * healing["tokens/s"] / rate,
        },
    ]
    checks = [
        Check(f"{row['pass']}: share of the matmul rate", row["share of matmul rate"], UTILIZATION_GOAL, True)
        for row in rows
    ]
    title = (
        f"utilization: {forward / 1e9:.3f} GFLOP per token forward at {block_size} tokens; matmul rate "
        f"{rate / 1e9:.1f} GFLOP/s ({dtype})"
    )
    return Report(title, rows, checks)
