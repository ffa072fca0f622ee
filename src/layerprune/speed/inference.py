"""What pruning buys at inference: prefill and greedy-decoding speedups of pruned models against the ideal set by
the removed layers' share of the time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..adapters import get_adapter, model_device, num_layers
from ..cache import cacheable as store_cacheable
from ..cache import decode_records, encode_records
from ..similarity import DistanceProfile
from ..surgery import prune_fraction
from .measure import Stopwatch, paired_ratio, rounds, timed
from .report import Check, Report, cacheable


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
    strategy = "last" if profile is None else "similarity"
    pruned = {f: prune_fraction(model, profile, f, strategy, seed=seed) for f in fractions}
    return {fraction: (p.layers, p.model) for fraction, p in pruned.items()}


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


@store_cacheable("pruned-speed", encode=encode_records, decode=decode_records, timing=True)
@torch.no_grad()
def pruned_speed(
    model: nn.Module,
    profile: DistanceProfile,
    batch: torch.Tensor,
    fractions: Sequence[float],
    *,
    strategy: str = "similarity",
    seed: int = 0,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Parameters and forward-pass tokens/s (best of `repeats`, after one warm-up pass) of the model pruned to each
    fraction; with `cache=True` cached as a timing (keyed by this machine too)."""
    rows = []
    for fraction in fractions:
        pruned = prune_fraction(model, profile, fraction, strategy, seed=seed)
        ids = batch.to(model_device(pruned.model))
        forward = timed(lambda m=pruned.model, x=ids: m(input_ids=x, use_cache=False), ids.device)
        forward()
        best = min(forward() for _ in range(repeats))
        rows.append(
            {
                "fraction": fraction,
                "n": pruned.n,
                "parameters": sum(p.numel() for p in pruned.model.parameters()),
                "tokens per second": ids.numel() / best,
            }
        )
    return rows
