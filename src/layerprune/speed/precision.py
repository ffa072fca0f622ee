"""bfloat16 against float32: what it buys in time and memory at each step of the method, measured side by side
(`precision_speed`), and what it changes in the profile, the chosen blocks, the held-out loss and the answers
to ARC-Easy, on the same inputs (`precision_agreement`)."""

from __future__ import annotations

import functools
import gc
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..adapters import model_device
from ..cache import model_identity
from ..machine import amx_cpu, native_bf16_cpu
from ..models import DTYPE_ENV, default_device, load_model, load_tokenizer, resolve_source
from ..selection import select_block
from ..similarity import DistanceProfile, profile_distances
from ..study.statistics import mcnemar_exact
from ..study.steps import cached_heldout_loss, cached_profile
from .measure import PeakMemory, current_mib, in_subprocess, paired_ratio, rounds, timed, torch_threads
from .profiling import corpus_tokens, plain_forward
from .report import Check, Report, cacheable

DTYPES = ("float32", "bfloat16")
TASK = "arc_easy"
FORWARD_GOALS = {"smollm2-135m": 3.0, "qwen2.5-coder-1.5b": 6.0}
"""float32 time / bfloat16 time of a forward pass that a CPU with AMX must reach, per model."""
BF16_PEAK_GOALS_MIB = {"qwen2.5-coder-1.5b": 6e9 / 2**20}
"""The most memory (6 GB) a process may hold at its peak to load and profile the model in bfloat16, per model."""
AGREEMENT_KEYS = ("measure", "value", "detail")


def tokenizer_of(model_name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model given by name (the same in every dtype), without loading the model."""
    return load_tokenizer(resolve_source(model_name))


def healing_seconds(
    model_name: str, tokenizer: PreTrainedTokenizerBase, blocks: torch.Tensor, dtype: str, batch_size: int
) -> float:
    """Training seconds (loading excluded) of QLoRA on a 4-bit NF4 base computing in `dtype`, one step per
    `batch_size` blocks; the trained model is freed before the next run loads its own."""
    from ..healing.training import heal

    with mock.patch.dict(os.environ, {DTYPE_ENV: dtype}):  # `heal` loads by name in LAYERPRUNE_DTYPE
        result = heal(
            model_name,
            tokenizer,
            blocks,
            quantization="4bit",
            steps=blocks.shape[0] // batch_size,
            batch_size=batch_size,
            grad_accum=1,
            warmup=0,
            progress=False,
        )
    seconds = result.seconds
    del result
    gc.collect()
    return seconds


def precision_memory_of(
    model: str, dtype: str, block_size: int, count: int, batch_size: int, seed: int, corpus: str = "sotu"
) -> dict[str, float]:
    """Memory of the model in one dtype, loaded as `load_model` loads it (memory-mapped), in this process: what
    it holds once a first forward pass has touched every weight, the peak while loading it (and that pass), and
    the peak while profiling `count` blocks with `profile_distances` (the subprocess entry of `precision_speed`)."""
    device = default_device()
    blocks = corpus_tokens(tokenizer_of(model), "profile", count, block_size, seed, corpus)
    with PeakMemory(device) as loading:
        lm = load_model(model, dtype=dtype)[0]
        plain_forward(lm, blocks[:1, :8], 1)
        resident = current_mib(device) - loading.baseline
    with PeakMemory(device) as work:
        profile_distances(lm, blocks, batch_size=batch_size, progress=False, identity=dtype)
    return {"model MiB": resident, "load peak MiB": loading.peak, "profile peak MiB": work.peak}


def model_work(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    blocks: torch.Tensor,
    batch_size: int,
    questions: int,
    seed: int,
) -> dict[str, Callable[[], object]]:
    """The timed work on a loaded model: a forward pass and the all-n profile over `blocks`, an lm-eval pass
    over `questions` ARC-Easy questions (cache off). The profile is given an identity, so no time goes to
    hashing the weights (which costs more in float32 for no reason of arithmetic)."""
    from ..evaluation.harness import evaluate

    return {
        "forward": lambda: plain_forward(model, blocks, batch_size),
        "profile": lambda: profile_distances(model, blocks, batch_size=batch_size, progress=False, identity="timed"),
        "evaluation": lambda: evaluate(
            model, tokenizer, [TASK], limit=questions, seed=seed, batch_size=batch_size, cache=False, progress=False
        ),
    }


def precision_checks(
    model_name: str, forward_ratio: float, bf16_peak_mib: float, *, amx: bool, native_bf16: bool
) -> list[Check]:
    """The goals that apply: on a CPU with AMX, the forward speedup of `FORWARD_GOALS`; on one with native bf16
    but no AMX (AVX512-BF16), a forward pass no slower in bf16, the premise of `load_model`'s "auto" dtype
    there; on any machine, the bfloat16 peak of `BF16_PEAK_GOALS_MIB`."""
    checks = []
    if amx and model_name in FORWARD_GOALS:
        checks.append(Check("float32 / bfloat16 forward time (AMX)", forward_ratio, FORWARD_GOALS[model_name], True))
    elif native_bf16 and not amx:
        checks.append(Check("float32 / bfloat16 forward time (AVX512-BF16)", forward_ratio, 1.0, True))
    if model_name in BF16_PEAK_GOALS_MIB:
        goal = BF16_PEAK_GOALS_MIB[model_name]
        checks.append(Check("bfloat16 process peak MiB (load, profile)", bf16_peak_mib, goal, False))
    return checks


@cacheable("precision")
def precision_speed(
    model_name: str,
    *,
    blocks: int = 8,
    block_size: int = 128,
    batch_size: int = 8,
    repeats: int = 3,
    threads: int = 1,
    heal_steps: int = 3,
    heal_batch_size: int = 2,
    questions: int = 40,
    seed: int = 0,
    corpus: str = "sotu",
    progress: bool = True,
) -> Report:
    """float32 against bfloat16. First each dtype's memory, each in a fresh interpreter (`precision_memory_of`);
    then, side by side in rotating rounds, `heal_steps` QLoRA steps on a 4-bit NF4 base computing in each dtype,
    and on the model loaded in both dtypes a forward pass and `profile_distances` over `blocks` blocks and an
    lm-eval pass over `questions` ARC-Easy questions: each time's best round, and the median over rounds of
    float32 time / bfloat16 time.

    Goals (`precision_checks`): on a CPU with AMX, whose tiles multiply bf16 matrices, the forward pass must be
    `FORWARD_GOALS` times faster in bf16. On a CPU with AVX512-BF16 and no AMX there is no tile speedup to hold
    a model to; the goal there is that bf16 is no slower (ratio >= 1), which `load_model`'s "auto" dtype assumes
    when it picks bf16 on such a CPU. On a GPU no speed goal applies. The peak of `BF16_PEAK_GOALS_MIB` holds
    anywhere.
    """
    with torch_threads(threads):
        memory = {
            dtype: in_subprocess(
                "precision_memory_of",
                model=model_name,
                dtype=dtype,
                block_size=block_size,
                count=blocks,
                batch_size=batch_size,
                seed=seed,
                corpus=corpus,
            )
            for dtype in DTYPES
        }
        times = precision_times(
            model_name,
            blocks=blocks,
            block_size=block_size,
            batch_size=batch_size,
            repeats=repeats,
            heal_steps=heal_steps,
            heal_batch_size=heal_batch_size,
            questions=questions,
            seed=seed,
            corpus=corpus,
            progress=progress,
        )
    labels = {
        "forward": f"forward pass, {blocks} x {block_size} tokens, batch {batch_size}",
        "profile": "profile_distances (every n) over the same blocks",
        "healing": f"QLoRA on a 4-bit NF4 base: {heal_steps} steps of {heal_batch_size} x {block_size} tokens",
        "evaluation": f"lm-eval {TASK}, {questions} questions, batch {batch_size}, cache off",
    }
    rows = [time_row(labels[name], times[name]) for name in labels] + memory_rows(memory)
    forward = paired_ratio(times["forward"]["float32"], times["forward"]["bfloat16"])
    cpu = default_device().type == "cpu"
    bf16_peak = max(memory["bfloat16"]["load peak MiB"], memory["bfloat16"]["profile peak MiB"])
    checks = precision_checks(
        model_name, forward, bf16_peak, amx=cpu and amx_cpu(), native_bf16=cpu and native_bf16_cpu()
    )
    title = f"float32 against bfloat16: {model_name}, {repeats} rounds, {threads or 'default'} torch thread(s)"
    return Report(title, rows, checks)


def precision_times(
    model_name: str,
    *,
    blocks: int,
    block_size: int,
    batch_size: int,
    repeats: int,
    heal_steps: int,
    heal_batch_size: int,
    questions: int,
    seed: int,
    corpus: str,
    progress: bool,
) -> dict[str, dict[str, list[float]]]:
    """Seconds per round of each work in each dtype: healing first (each run loads its own 4-bit base), then the
    work of `model_work` on the model loaded in both dtypes side by side."""
    tokenizer = tokenizer_of(model_name)
    heal_blocks = corpus_tokens(tokenizer, "heal", heal_steps * heal_batch_size, block_size, seed, corpus)
    healing = {
        dtype: functools.partial(healing_seconds, model_name, tokenizer, heal_blocks, dtype, heal_batch_size)
        for dtype in DTYPES
    }
    times = {"healing": rounds(healing, repeats, progress=progress)}
    models = {dtype: load_model(model_name, dtype=dtype)[0] for dtype in DTYPES}
    tokens = corpus_tokens(tokenizer, "profile", blocks, block_size, seed, corpus)
    work = {dtype: model_work(model, tokenizer, tokens, batch_size, questions, seed) for dtype, model in models.items()}
    for model in models.values():
        warm_up(model, tokenizer)
    device = model_device(models[DTYPES[0]])
    for name in ("forward", "profile", "evaluation"):
        times[name] = rounds({dtype: timed(work[dtype][name], device) for dtype in DTYPES}, repeats, progress=progress)
    return times


def warm_up(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    """Run the kernels and lm-eval's set-up once, so that neither counts in the first timed round."""
    from ..evaluation.harness import evaluate

    plain_forward(model, torch.zeros(1, 8, dtype=torch.long), 1)
    evaluate(model, tokenizer, [TASK], limit=1, cache=False, progress=False)


def time_row(label: str, times: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """A timed work's row: each dtype's best round and the median per-round ratio (with every round's)."""
    ratios = [a / b for a, b in zip(times["float32"], times["bfloat16"], strict=True)]
    return {
        "work": label,
        "unit": "s (best)",
        "float32": min(times["float32"]),
        "bfloat16": min(times["bfloat16"]),
        "float32 / bfloat16": paired_ratio(times["float32"], times["bfloat16"]),
        "per round": " ".join(f"{ratio:.2f}" for ratio in ratios),
    }


def memory_rows(memory: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """The model's memory and the process's peaks, in each dtype (each dtype in a fresh interpreter)."""
    labels = {
        "model MiB": "model, after a first forward pass",
        "load peak MiB": "process peak: loading, first forward",
        "profile peak MiB": "process peak: profile_distances",
    }
    return [
        {
            "work": label,
            "unit": "MiB",
            "float32": memory["float32"][key],
            "bfloat16": memory["bfloat16"][key],
            "float32 / bfloat16": memory["float32"][key] / memory["bfloat16"][key],
            "per round": "-",
        }
        for key, label in labels.items()
    ]


def dtype_measures(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    profile_blocks: torch.Tensor,
    heldout_blocks: torch.Tensor,
    *,
    questions: int | None,
    batch_size: int,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    """One model's profile, held-out loss (nats) and per-question ARC-Easy scores, each cached on its own by the
    model's identity and the exact inputs (the same entries as the book's: `study.steps`, `evaluate`), so that
    an interrupted run resumes from the last part it finished."""
    from ..evaluation.harness import evaluate

    identity = model_identity(model)
    profile = cached_profile(model, profile_blocks, batch_size=batch_size, progress=progress)
    loss = cached_heldout_loss(model, heldout_blocks, batch_size=batch_size, progress=progress, identity=identity)
    results = evaluate(
        model,
        tokenizer,
        [TASK],
        limit=questions,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        identity=identity,
    )
    return {"profile": profile, "loss": loss.loss, "tokens": loss.tokens, "questions": results.questions[TASK]}


def precision_agreement(
    model_name: str,
    *,
    profile_blocks: int = 64,
    heldout_blocks: int = 32,
    arc_questions: int | None = None,
    seed: int = 0,
    block_size: int = 128,
    batch_size: int = 8,
    corpus: str = "sotu",
    dtypes: tuple[str, str] = DTYPES,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The model loaded in each of `dtypes` (reference first), one after the other, measured on the same inputs
    (`dtype_measures`, cached): how far the profiles are apart, for which n the block l*(n) is the same, the
    held-out loss in each, and ARC-Easy accuracy in each on the same questions (`arc_questions`, None = all)
    with the paired counts and McNemar's exact p. Rows of `AGREEMENT_KEYS`."""
    tokenizer = tokenizer_of(model_name)
    profile_tokens = corpus_tokens(tokenizer, "profile", profile_blocks, block_size, seed, corpus)
    heldout_tokens = corpus_tokens(tokenizer, "heldout", heldout_blocks, block_size, seed, corpus)
    measured = []
    for dtype in dtypes:
        model = load_model(model_name, dtype=dtype)[0]
        measured.append(
            dtype_measures(
                model,
                tokenizer,
                profile_tokens,
                heldout_tokens,
                questions=arc_questions,
                batch_size=batch_size,
                seed=seed,
                progress=progress,
            )
        )
        del model
        gc.collect()
    return agreement_rows(*measured, names=dtypes)


def agreement_rows(reference: Mapping[str, Any], compared: Mapping[str, Any], names: Sequence[str]) -> list[dict]:
    """The comparison of two `dtype_measures` results (named `names`) as rows of `AGREEMENT_KEYS`."""
    return [
        *profile_rows(reference["profile"], compared["profile"], names=names),
        *loss_rows(reference, compared, names=names),
        *answer_rows(reference["questions"], compared["questions"], names=names),
    ]


def profile_rows(reference: DistanceProfile, compared: DistanceProfile, names: Sequence[str]) -> list[dict]:
    """The largest |D difference| over every n >= 1 and l, and the n of 1..L-1 for which l*(n) is the same."""
    a, b = names
    delta = np.abs(compared.mean - reference.mean)[1:]
    n, start = np.unravel_index(np.nanargmax(delta), delta.shape)
    entries = int(np.isfinite(delta).sum())
    sizes = range(1, reference.num_layers)
    blocks = {size: (select_block(reference, size).start, select_block(compared, size).start) for size in sizes}
    differ = {size: pair for size, pair in blocks.items() if pair[0] != pair[1]}
    gaps = ", ".join(
        f"n={size}: {first}/{second} (D gap {reference.mean[size, second] - reference.mean[size, first]:.1e} in {a})"
        for size, (first, second) in differ.items()
    )
    return [
        {
            "measure": f"max |D({b}) - D({a})| over every n, l",
            "value": float(delta[n, start]),
            "detail": f"at n={n + 1}, l={start}; mean {np.nanmean(delta):.1e} over {entries} entries; "
            f"{reference.num_sequences} sequences",
        },
        {
            "measure": f"n of 1..{reference.num_layers - 1} with the same l*(n)",
            "value": len(blocks) - len(differ),
            "detail": f"differ, l* in {a}/{b}: {gaps}" if differ else "all the same",
        },
    ]


def loss_rows(reference: Mapping[str, Any], compared: Mapping[str, Any], names: Sequence[str]) -> list[dict]:
    """The held-out loss in each and their difference, in nats."""
    a, b = names
    detail = f"{reference['tokens']} tokens scored"
    return [
        {"measure": f"held-out loss, {a} (nats)", "value": reference["loss"], "detail": detail},
        {"measure": f"held-out loss, {b} (nats)", "value": compared["loss"], "detail": detail},
        {"measure": f"held-out loss, {b} - {a} (nats)", "value": compared["loss"] - reference["loss"], "detail": ""},
    ]


def answer_rows(reference: Mapping[str, float], compared: Mapping[str, float], names: Sequence[str]) -> list[dict]:
    """ARC-Easy accuracy in each on the same questions, the questions right in only one, McNemar's exact p."""
    a, b = names
    ids = sorted(reference)
    only_a = sum(reference[i] > compared[i] for i in ids)
    only_b = sum(compared[i] > reference[i] for i in ids)
    detail = f"the same {len(ids)} questions"
    return [
        {"measure": f"ARC-Easy accuracy, {a}", "value": sum(reference[i] for i in ids) / len(ids), "detail": detail},
        {"measure": f"ARC-Easy accuracy, {b}", "value": sum(compared[i] for i in ids) / len(ids), "detail": detail},
        {"measure": f"questions right only in {a}", "value": only_a, "detail": ""},
        {"measure": f"questions right only in {b}", "value": only_b, "detail": ""},
        {
            "measure": "McNemar's exact p (two-sided)",
            "value": mcnemar_exact(only_a, only_b),
            "detail": f"binomial(1/2) on the {only_a + only_b} discordant questions",
        },
    ]
