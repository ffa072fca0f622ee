"""The results grid of the study: for each fraction x strategy, the pruned model's held-out loss and QA accuracy,
and, where it is healed, the same for the quantized base without an adapter (what quantization alone costs) and
for the healed model; every question's score is kept, so that any two rows can be compared on the same
questions."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapters import model_device, model_name
from ..cache import model_identity, pruned_identity
from ..machine import release_memory
from ..prefix import DEFAULT_MAX_BYTES, PrefixStates
from ..selection import block_for_fraction
from ..similarity import DistanceProfile
from ..surgery import prune_fraction
from .statistics import PairedComparison, paired_comparison
from .steps import cached_heal, cached_heldout_loss

STAGES = ("pruned", "quantized", "healed")
"""pruned: the pruned model as loaded; quantized: its quantized copy (the healing base) with no adapter; healed."""


@dataclass
class SweepResult:
    """One row per (fraction, strategy, stage); `questions[i]` holds row i's per-question scores per task."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def has(self, **match: Any) -> bool:
        """Whether some row's columns equal `match`."""
        return any(all(row.get(k) == v for k, v in match.items()) for row in self.rows)

    def find(self, **match: Any) -> int:
        """The index of the one row whose columns equal `match`."""
        found = [i for i, row in enumerate(self.rows) if all(row.get(k) == v for k, v in match.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} rows match {match}")
        return found[0]

    def paired(self, task: str, a: int, b: int, *, seed: int = 0) -> PairedComparison:
        """Row b against row a on `task`, on the same questions."""
        return paired_comparison(self.questions[a][task], self.questions[b][task], seed=seed)


def sweep(
    model: nn.Module,
    tokenizer,
    profile: DistanceProfile,
    blocks: Mapping[str, torch.Tensor],
    *,
    fractions: Sequence[float],
    strategies: Sequence[str],
    heal_fractions: Sequence[float] = (),
    tasks: Sequence[str] = (),
    limits: Mapping[str, int] | None = None,
    heal_settings: Mapping[str, Any] | None = None,
    num_fewshot: int | None = None,
    strategy_fractions: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    share_prefixes: bool = True,
) -> SweepResult:
    """Fraction 0 is the unpruned model (one row, strategy "none"). For the fractions in `heal_fractions` the
    pruned model is also healed (`heal_settings`: keyword arguments of `heal`), and, when healing quantizes the
    base, its quantized copy without an adapter is scored too. `num_fewshot` goes to `evaluate` (None: each
    task's default). `strategy_fractions` runs a strategy at its own fractions instead of `fractions` (a cheaper
    grid for a baseline). With `share_prefixes`, each pruned model starts its scoring passes from the unpruned
    model's states where its removed block starts (`PrefixStates`: the same numbers, the layers before the block
    computed once in all); without, every model runs every layer."""
    evaluation = {"limit": dict(limits or {}), "num_fewshot": num_fewshot, "seed": seed, "batch_size": batch_size}
    settings = dict(heal_settings or {})
    base_identity = model_identity(model)
    name = model_name(model)
    result = SweepResult()
    at = {strategy: list((strategy_fractions or {}).get(strategy, fractions)) for strategy in strategies}
    grid = sorted([(f, s) for s in strategies for f in at[s] if f > 0] + [(0.0, "none")] * (0 in fractions))
    prefixes = PrefixStates(max_bytes=DEFAULT_MAX_BYTES if share_prefixes else 0)
    starts = {_block_start(profile, f, s, seed) for f, s in grid if s != "none"} - {0, profile.num_layers}
    for fraction, strategy in tqdm(grid, desc="sweep"):
        pruned = prune_fraction(model, profile, fraction, "last" if strategy == "none" else strategy, seed=seed)
        shared = min(pruned.layers, default=profile.num_layers)
        variants = [("pruned", pruned.model, pruned_identity(base_identity, pruned.layers))]
        if pruned.n and fraction in heal_fractions:
            variants += _healing_variants(pruned.model, tokenizer, blocks["heal"], settings, seed)
        for stage, candidate, identity in variants:
            reuse = prefixes.sharing(candidate, shared, starts & set(range(1, shared + 1)))
            with reuse if stage == "pruned" else contextlib.nullcontext():
                loss = cached_heldout_loss(
                    candidate, blocks["heldout"], batch_size=batch_size, progress=False, identity=identity
                )
                scores, questions = _scores(candidate, tokenizer, tasks, evaluation, identity)
            result.rows.append(
                {
                    "model": name,
                    "fraction": fraction,
                    "n": pruned.n,
                    "strategy": strategy,
                    "stage": stage,
                    "layers": " ".join(map(str, pruned.layers)),
                    "parameters": sum(p.numel() for p in pruned.model.parameters()),
                    "loss": loss.loss,
                    "normalized loss": loss.normalized,
                    **scores,
                }
            )
            result.questions.append(questions)
        del pruned, variants, candidate  # the copies of this point go before the next is made
        release_memory()
    return result


def _block_start(profile: DistanceProfile, fraction: float, strategy: str, seed: int) -> int:
    """The first layer a strategy removes at a fraction: the layers before it are the unpruned model's."""
    selection = block_for_fraction(profile, fraction, strategy, seed=seed)
    return min(selection.layers) if selection else profile.num_layers


def _healing_variants(
    pruned: nn.Module, tokenizer, heal_blocks: torch.Tensor, settings: Mapping[str, Any], seed: int
) -> list[tuple[str, nn.Module, str]]:
    """The quantized base without an adapter (when healing quantizes) and the healed model."""
    from ..healing.training import load_base  # peft and bitsandbytes load only when a chapter heals

    variants = []
    quantization = settings.get("quantization", "4bit")
    if quantization is not None:
        base = load_base(pruned, quantization, model_device(pruned))
        variants.append(("quantized", base, model_identity(base)))
    healed = cached_heal(pruned, tokenizer, heal_blocks, seed=seed, progress=False, **settings).model
    variants.append(("healed", healed, model_identity(healed)))
    return variants


def _scores(
    model: nn.Module, tokenizer, tasks: Sequence[str], settings: Mapping[str, Any], identity: str
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """Headline value and stderr of each task as flat columns, and each task's per-question scores."""
    if not tasks:
        return {}, {}
    from ..evaluation.harness import evaluate  # lm-eval loads only when a chapter evaluates

    results = evaluate(model, tokenizer, list(tasks), identity=identity, progress=False, **settings)
    flat: dict[str, Any] = {}
    for row in results.rows:
        if row["headline"]:
            flat[row["task"]] = row["value"]
            flat[f"{row['task']} stderr"] = row["stderr"]
            flat[f"{row['task']} n"] = row["n"]
            flat[f"{row['task']} chance"] = row["chance"]
    return flat, results.questions


def comparisons(result: SweepResult, tasks: Sequence[str], *, seed: int = 0) -> list[dict[str, Any]]:
    """Each row against the unpruned model, each healed or quantized row against the same pruned model, and each
    other strategy against the similarity block at the same fraction and stage, on the same questions: the
    accuracy difference (row minus reference) with its 95% paired-bootstrap interval and McNemar's p."""
    base = result.find(strategy="none")
    rows = []
    for index, row in enumerate(result.rows):
        if index == base:
            continue
        same = {"fraction": row["fraction"], "strategy": row["strategy"]}
        references = [("unpruned", base)]
        if row["stage"] != "pruned":
            references.append(("pruned", result.find(**same, stage="pruned")))
        if row["strategy"] != "similarity" and result.has(fraction=row["fraction"], strategy="similarity"):
            references.append(("similarity", result.find(**same | {"strategy": "similarity"}, stage=row["stage"])))
        for versus, reference in references:
            for task in tasks:
                paired = result.paired(task, reference, index, seed=seed)
                rows.append(
                    {
                        "model": row["model"],
                        "task": task,
                        "fraction": row["fraction"],
                        "strategy": row["strategy"],
                        "stage": row["stage"],
                        "versus": versus,
                        "questions": paired.questions,
                        "difference": paired.difference,
                        "low": paired.low,
                        "high": paired.high,
                        "p": paired.p_value,
                    }
                )
    return rows
