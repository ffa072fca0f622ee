"""The results grid of the study: for each fraction x strategy, the pruned model's held-out loss and QA accuracy,
and, where it is healed, the same for the quantized base without an adapter (what quantization alone costs) and
for the healed model; every question's score is kept, so that any two rows can be compared on the same
questions."""

from __future__ import annotations

import contextlib
import math
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
from . import files
from .statistics import GradedComparison, PairedComparison, graded_comparison, holm, paired_comparison
from .steps import cached_heal, cached_heldout_loss

STAGES = ("pruned", "quantized", "healed")
"""pruned: the pruned model as loaded; quantized: its quantized copy (the healing base) with no adapter; healed."""


@dataclass
class SweepResult:
    """One row per (fraction, strategy, stage); `questions[i]` holds row i's per-question scores per task (1 right,
    0 wrong), `graded[i]` its graded per-question scores per task (e.g. the probability of the right answer) where
    the evaluation gives them (else an empty mapping)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, dict[str, float]]] = field(default_factory=list)
    graded: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def has(self, **match: Any) -> bool:
        """Whether some row's columns equal `match`."""
        return any(all(row.get(k) == v for k, v in match.items()) for row in self.rows)

    def find(self, **match: Any) -> int:
        """The index of the one row whose columns equal `match`."""
        found = [i for i, row in enumerate(self.rows) if all(row.get(k) == v for k, v in match.items())]
        if len(found) != 1:
            raise KeyError(f"{len(found)} rows match {match}")
        return found[0]

    def paired(self, task: str, a: int, b: int) -> PairedComparison:
        """Row b against row a on `task`, on the same questions (exact McNemar; `statistics.PairedComparison`)."""
        return paired_comparison(self.questions[a][task], self.questions[b][task])

    def graded_paired(self, task: str, a: int, b: int) -> GradedComparison | None:
        """Row b against row a on `task`'s graded scores (paired t), None where either row has none."""
        graded = self.graded if len(self.graded) == len(self.rows) else [{}] * len(self.rows)
        if not graded[a].get(task) or not graded[b].get(task):
            return None
        return graded_comparison(graded[a][task], graded[b][task])


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
    first_limits: Mapping[str, int] | None = None,
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
    computed once in all); without, every model runs every layer. `first_limits` (per task, over `limits`) scores
    the unpruned model and each strategy's smallest fraction on more questions: the first comparison, on which
    whether the accuracy holds at all hinges; the questions they add are scored as an evaluation of their own, so
    the shared ones run in the batches of every other point and their prefix states serve them all. Subsets are
    nested, so every comparison pairs the questions both rows answered."""
    evaluation = {"num_fewshot": num_fewshot, "seed": seed, "batch_size": batch_size}
    settings = dict(heal_settings or {})
    base_identity = model_identity(model)
    name = model_name(model)
    result = SweepResult()
    at = {strategy: list((strategy_fractions or {}).get(strategy, fractions)) for strategy in strategies}
    grid = sorted([(f, s) for s in strategies for f in at[s] if f > 0] + [(0.0, "none")] * (0 in fractions))
    prefixes = PrefixStates(max_bytes=DEFAULT_MAX_BYTES if share_prefixes else 0)
    starts = [_block_start(profile, f, s, seed) if s != "none" else profile.num_layers for f, s in grid]
    first = {(min((f for f in at[s] if f > 0), default=0.0), s) for s in strategies} | {(0.0, "none")}
    for index, (fraction, strategy) in enumerate(tqdm(grid, desc="sweep")):
        later = set(starts[index + 1 :]) - {0, profile.num_layers}  # where the models still to come start
        pruned = prune_fraction(model, profile, fraction, "last" if strategy == "none" else strategy, seed=seed)
        shared = min(pruned.layers, default=profile.num_layers)
        asked, rest = _questions_asked(limits, first_limits if (fraction, strategy) in first else None, num_fewshot)
        scoring = {**evaluation, "limit": asked}  # every stage of a point answers the same questions
        prefixes.retain(later | {shared})
        variants = [("pruned", pruned.model, pruned_identity(base_identity, pruned.layers))]
        if pruned.n and fraction in heal_fractions:
            prefixes.retain(later)  # healing reads no stored state: free this point's before it trains
            variants += _healing_variants(pruned.model, tokenizer, blocks["heal"], settings, seed)
        for stage, candidate, identity in variants:
            reuse = prefixes.sharing(candidate, shared, later & set(range(1, shared + 1)))
            with reuse if stage == "pruned" else contextlib.nullcontext():
                loss = cached_heldout_loss(
                    candidate, blocks["heldout"], batch_size=batch_size, progress=False, identity=identity
                )
                scores, questions, graded = _scores(candidate, tokenizer, tasks, scoring, identity, rest)
            result.rows.append(
                {
                    "model": name,
                    "fraction": fraction,
                    "n": pruned.n,
                    "model layers": profile.num_layers,
                    "fraction removed": pruned.n / profile.num_layers,
                    "strategy": strategy,
                    "stage": stage,
                    "layers": " ".join(map(str, pruned.layers)),
                    "parameters": sum(p.numel() for p in pruned.model.parameters()),
                    "loss": loss.loss,
                    "normalized loss": loss.normalized,
                    files.BLOCK_LOSSES: files.block_losses_cell(loss.block_losses),
                    **scores,
                }
            )
            result.questions.append(questions)
            result.graded.append(graded)
        del pruned, variants, candidate  # the copies of this point go before the next is made
        release_memory()
    return result


def _questions_asked(
    limits: Mapping[str, int | None] | None, larger: Mapping[str, int | None] | None, num_fewshot: int | None
) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """The limits a point is scored at and, where `larger` (a first point's limits) asks more, the larger limits
    whose added questions are scored as an evaluation of their own: the shared questions then run in the batches
    every other point runs them in, so their prefix states are reused. A task whose prompts depend on the subset
    (`tasks.questions_independent`) is scored at the larger limit at once."""
    from ..evaluation.tasks import questions_independent

    asked, rest = dict(limits or {}), {}
    for task, limit in (larger or {}).items():
        smaller = asked.get(task, 0)
        if smaller is None or (limit is not None and limit <= smaller):
            continue  # the point asks every question already, or no more than the others
        if task in asked and questions_independent(task, num_fewshot):
            rest[task] = limit
        else:
            asked[task] = limit
    return asked, rest


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
    model: nn.Module,
    tokenizer,
    tasks: Sequence[str],
    settings: Mapping[str, Any],
    identity: str,
    rest: Mapping[str, int | None] | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Each task's accuracy as flat columns, each task's per-question scores, and its graded per-question scores
    where the evaluation gives them; `rest` (per task, a larger limit than `settings`'): the questions it adds,
    scored as an evaluation of their own and counted in. The accuracy is the mean over the questions scored
    (right / n), the number the paired tests and the Wilson intervals use (for MMLU, lm-eval's own figure is the
    mean over subjects, kept as "`task` (lm-eval)" where it differs)."""
    if not tasks:
        return {}, {}, {}
    from ..evaluation.harness import evaluate  # lm-eval loads only when a chapter evaluates

    rest = {task: limit for task, limit in (rest or {}).items() if task in tasks}
    results = evaluate(model, tokenizer, list(tasks), identity=identity, progress=False, **settings)
    questions = {task: dict(values) for task, values in results.questions.items()}
    graded = {task: dict(values) for task, values in results.probabilities.items()}
    if rest:
        parts = {"limit": rest, "after": {task: settings["limit"][task] for task in rest}}
        more = evaluate(model, tokenizer, list(rest), identity=identity, progress=False, **settings | parts)
        for task in rest:
            questions[task] |= more.questions[task]
            graded[task] |= more.probabilities[task]
    flat: dict[str, Any] = {}
    for row in results.rows:
        if row["headline"]:
            scores = questions.get(row["task"], {})
            count = len(scores) or int(row["n"])
            accuracy = sum(scores.values()) / count if scores else row["value"]
            lm_eval_value = _subject_average(scores) if row["task"] in rest else row["value"]
            flat[row["task"]] = accuracy
            flat[f"{row['task']} n"] = count
            flat[f"{row['task']} chance"] = row["chance"]
            if abs(accuracy - lm_eval_value) > 1e-9:
                flat[f"{row['task']} (lm-eval)"] = lm_eval_value
    return flat, questions, graded


def _subject_average(scores: Mapping[str, float]) -> float:
    """lm-eval's figure for questions scored in parts: the mean over its tasks (MMLU's subjects, named before the
    ":" of each question id) of each one's mean score; for a task of one part, the mean score."""
    by_task: dict[str, list[float]] = {}
    for question, score in scores.items():
        by_task.setdefault(question.rsplit(":", 1)[0], []).append(score)
    return sum(sum(values) / len(values) for values in by_task.values()) / len(by_task)


FAMILIES = ("model", "task", "versus")
"""A family of comparisons, Holm-corrected together: one model, one task, one reference (every row against the
unpruned model; every strategy against the similarity block; every healed or quantized model against its pruned
one)."""


def comparisons(result: SweepResult, tasks: Sequence[str]) -> list[dict[str, Any]]:
    """Each row against the unpruned model, each healed or quantized row against the same pruned model, and each
    other strategy against the similarity block at the same fraction and stage, on the same questions: the
    accuracy difference (row minus reference), McNemar's exact p (raw, and Holm-corrected within each family,
    `FAMILIES`), its 95% interval (consistent with the raw p), the equivalence test at the accuracy margin, the
    outcome (different: Holm p < 0.05 and not equivalent; equivalent; inconclusive) and the smallest difference
    detectable with 80% power. Where the rows have graded scores, the same columns for the graded measure (paired
    t), prefixed "graded"."""
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
                paired = result.paired(task, reference, index)
                line = {
                    "model": row["model"],
                    "task": task,
                    "fraction": row["fraction"],
                    "fraction removed": row.get("fraction removed", row["fraction"]),
                    "strategy": row["strategy"],
                    "stage": row["stage"],
                    "versus": versus,
                    "questions": paired.questions,
                    "difference": paired.difference,
                    "low": paired.low,
                    "high": paired.high,
                    "a only": paired.a_only,
                    "b only": paired.b_only,
                    "p": paired.p_value,
                    "low 90": paired.low90,
                    "high 90": paired.high90,
                    "margin": paired.margin,
                    "p equivalence": paired.p_equivalence,
                    "detectable": paired.detectable,
                }
                graded = result.graded_paired(task, reference, index)
                if graded is not None:
                    line |= {
                        "graded difference": graded.difference,
                        "graded low": graded.low,
                        "graded high": graded.high,
                        "graded p": graded.p_value,
                        "graded margin": graded.margin,
                        "graded p equivalence": graded.p_equivalence,
                        "graded detectable": graded.detectable,
                    }
                rows.append(line)
    return with_holm(rows)


def with_holm(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` (comparison rows) with "p holm" (and "graded p holm") within each family (`FAMILIES`) and the outcome
    each decides ("outcome", "graded outcome"), columns in a stable order."""
    from .statistics import outcome

    families: dict[tuple, list[int]] = {}
    for i, row in enumerate(rows):
        families.setdefault(tuple(row[key] for key in FAMILIES), []).append(i)
    for prefix in ("", "graded "):
        if not any(f"{prefix}p" in row for row in rows):
            continue
        for members in families.values():
            raw = [rows[i].get(f"{prefix}p", math.nan) for i in members]
            for i, adjusted in zip(members, holm(raw), strict=True):
                if f"{prefix}p" in rows[i]:
                    rows[i][f"{prefix}p holm"] = adjusted
                    rows[i][f"{prefix}outcome"] = outcome(adjusted, rows[i][f"{prefix}p equivalence"])
    order = [
        "p holm", "outcome", "graded difference", "graded low", "graded high", "graded p", "graded p holm",
        "graded margin", "graded p equivalence", "graded outcome", "graded detectable",
    ]  # fmt: skip
    return [{k: v for k, v in row.items() if k not in order} | {k: row[k] for k in order if k in row} for row in rows]
