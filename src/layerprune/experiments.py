"""The book's experiments as cached calls: each result is keyed by the model's identity, the exact token
blocks and every setting, so a rerun with the same parameters reuses it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .benchmarks import key_part, timing_machine
from .cache import cache_path, file_lock, stable_hash
from .generation import greedy_generate
from .identity import model_identity
from .lens import LogitLens, logit_lens
from .loss import HeldoutLoss, heldout_loss
from .memo import cached, decode_records, encode_records, tensor_digest
from .selection import layers_for_fraction, select_block
from .similarity import DistanceProfile, model_name, profile_distances
from .surgery import prune
from .tasks import TASKS, resolve_tasks

if TYPE_CHECKING:
    from .healing import HealResult


def _digest(blocks: torch.Tensor | Mapping[str, torch.Tensor]) -> str:
    if isinstance(blocks, torch.Tensor):
        return tensor_digest(blocks)
    return "+".join(tensor_digest(blocks[name]) for name in sorted(blocks))


def cached_profile(
    model: nn.Module,
    blocks: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    token: str = "last",
    metric: str = "angular",
    batch_size: int = 8,
    progress: bool = True,
) -> DistanceProfile:
    """`profile_distances`, cached; the profile carries this model's name even when another run computed it."""
    identity = model_identity(model)
    key = {"model": identity, "blocks": _digest(blocks), "token": token, "metric": metric}
    profile = cached(
        "profile",
        key,
        lambda: profile_distances(
            model, blocks, token=token, metric=metric, batch_size=batch_size, progress=progress, identity=identity
        ),
        encode=DistanceProfile.to_dict,
        decode=DistanceProfile.from_dict,
    )
    return dataclasses.replace(profile, model_name=model_name(model))


def cached_logit_lens(
    model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 4, progress: bool = True
) -> LogitLens:
    """`logit_lens`, cached."""
    key = {"model": model_identity(model), "blocks": tensor_digest(blocks)}
    return cached(
        "lens",
        key,
        lambda: logit_lens(model, blocks, batch_size=batch_size, progress=progress),
        encode=LogitLens.as_dict,
        decode=lambda value: LogitLens(**value),
    )


def cached_heldout_loss(
    model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 8, progress: bool = True, identity: str | None = None
) -> HeldoutLoss:
    """`heldout_loss`, cached (pass `identity` when it is already known, to skip hashing the weights)."""
    key: dict[str, Any] = {"model": identity or model_identity(model), "blocks": tensor_digest(blocks)}
    return cached(
        "heldout",
        key,
        lambda: heldout_loss(model, blocks, batch_size=batch_size, progress=progress),
        encode=HeldoutLoss.as_dict,
        decode=lambda value: HeldoutLoss(**value),
    )


def pruned_losses(
    model: nn.Module,
    profile: DistanceProfile,
    blocks: torch.Tensor,
    fractions: Sequence[float],
    strategies: Sequence[str],
    *,
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Held-out loss (not healed) after removing each fraction of layers with each strategy, one row each."""
    identity = model_identity(model)
    rows = []
    for fraction in tqdm(fractions, desc="fractions", leave=False):
        n = layers_for_fraction(profile.num_layers, fraction)
        for strategy in strategies:
            chosen = select_block(profile, n, strategy, seed=seed) if n else None
            layers = chosen.layers if chosen else ()
            pruned = prune(model, layers, strategy=strategy) if layers else model
            loss = cached_heldout_loss(
                pruned, blocks, batch_size=batch_size, progress=False, identity=pruned_identity(identity, layers)
            )
            rows.append(
                {
                    "fraction": fraction,
                    "n": n,
                    "strategy": strategy,
                    "layers": list(chosen.layers) if chosen else [],
                    "loss": loss.loss,
                    "normalized loss": loss.normalized,
                }
            )
    return rows


def cached_generations(model: nn.Module, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 40) -> list[str]:
    """`greedy_generate`, cached by the model's identity, the prompts and the length."""
    key = {"model": model_identity(model), "prompts": list(prompts), "max_new_tokens": max_new_tokens}
    return cached(
        "generations",
        key,
        lambda: greedy_generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens),
        encode=list,
        decode=list,
    )


def pruned_identity(identity: str, layers: Sequence[int]) -> str:
    """The cache identity of `prune(model, layers)` from `model`'s identity: pruning is deterministic, so the
    pruned weights need not be hashed again."""
    return stable_hash({"pruned from": identity, "removed": sorted(layers)}) if layers else identity


def heal_cached(
    model: nn.Module, tokenizer, blocks: torch.Tensor, *, seed: int = 0, progress: bool = True, **settings: Any
) -> HealResult:
    """`heal` with its checkpoints in the cache, keyed by the pruned model, the data and the settings: a rerun
    resumes from (or simply reloads) the last checkpoint instead of training again."""
    from .healing import heal  # peft and bitsandbytes load only when a chapter heals

    key = {"model": model_identity(model), "blocks": tensor_digest(blocks), "seed": seed, **settings}
    directory = cache_path("heal", stable_hash(key))
    with file_lock(directory):  # another process healing the same model waits, then reloads the final checkpoint
        return heal(model, tokenizer, blocks, seed=seed, checkpoint_dir=directory, progress=progress, **settings)


def _scores(
    model: nn.Module, tokenizer, tasks: Sequence[str], settings: Mapping[str, Any], identity: str
) -> dict[str, Any]:
    """Headline value and stderr of each task, as flat columns (`settings`: keyword arguments of `evaluate`)."""
    if not tasks:
        return {}
    from .evaluation import evaluate  # lm-eval loads only when a chapter evaluates

    results = evaluate(model, tokenizer, list(tasks), identity=identity, progress=False, **settings)
    flat: dict[str, Any] = {}
    for row in results.rows:
        if row["headline"]:
            flat[row["task"]] = row["value"]
            flat[f"{row['task']} stderr"] = row["stderr"]
    return flat


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
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """The results grid: for each fraction x strategy, the pruned model's held-out loss and task scores, and the
    same after healing for the fractions in `heal_fractions`. Fraction 0 is the unpruned model (one row).

    `num_fewshot` is passed to `evaluate` (None: each task's default, MMLU 5-shot and the others 0-shot).
    """
    evaluation = {"limit": dict(limits or {}), "num_fewshot": num_fewshot, "seed": seed, "batch_size": batch_size}
    base_identity = model_identity(model)
    rows = []
    grid = [(f, s) for f in fractions for s in strategies if f > 0] + [(0.0, "none")] * (0 in fractions)
    for fraction, strategy in tqdm(sorted(grid), desc="sweep"):
        n = layers_for_fraction(profile.num_layers, fraction)
        layers = select_block(profile, n, strategy, seed=seed).layers if n else ()
        pruned = prune(model, layers, strategy=strategy) if n else model
        variants = [(False, pruned, pruned_identity(base_identity, layers))]
        if n and fraction in heal_fractions:
            settings = dict(heal_settings or {})
            healed_model = heal_cached(pruned, tokenizer, blocks["heal"], seed=seed, progress=False, **settings).model
            variants.append((True, healed_model, model_identity(healed_model)))
        for healed, candidate, identity in variants:
            loss = cached_heldout_loss(
                candidate, blocks["heldout"], batch_size=batch_size, progress=False, identity=identity
            )
            rows.append(
                {
                    "fraction": fraction,
                    "n": n,
                    "strategy": strategy,
                    "healed": healed,
                    "layers": " ".join(map(str, layers)),
                    "parameters": sum(p.numel() for p in pruned.parameters()),
                    "loss": loss.loss,
                    "normalized loss": loss.normalized,
                    **_scores(candidate, tokenizer, tasks, evaluation, identity),
                }
            )
    return rows


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
    """Parameters and forward-pass tokens/s (best of `repeats`) of the model pruned to each fraction; cached like
    a benchmark, keyed by this machine too (`benchmarks.cacheable`)."""
    settings = {"fractions": list(fractions), "strategy": strategy, "seed": seed, "repeats": repeats}
    key = {name: key_part(value) for name, value in {"model": model, "profile": profile, "batch": batch}.items()}
    return cached(
        "pruned-speed",
        {**key, **settings, "machine": timing_machine()},
        lambda: _pruned_speed(model, profile, batch, **settings),
        encode=encode_records,
        decode=decode_records,
    )


@torch.no_grad()
def _pruned_speed(
    model: nn.Module,
    profile: DistanceProfile,
    batch: torch.Tensor,
    fractions: Sequence[float],
    strategy: str,
    seed: int,
    repeats: int,
) -> list[dict[str, Any]]:
    rows = []
    for fraction in fractions:
        n = layers_for_fraction(profile.num_layers, fraction)
        pruned = prune(model, select_block(profile, n, strategy, seed=seed).layers, strategy=strategy) if n else model
        ids = batch.to(next(pruned.parameters()).device)
        pruned(input_ids=ids, use_cache=False)
        best = min(_timed(pruned, ids) for _ in range(repeats))
        rows.append(
            {
                "fraction": fraction,
                "n": n,
                "parameters": sum(p.numel() for p in pruned.parameters()),
                "tokens per second": ids.numel() / best,
            }
        )
    return rows


def _timed(model: nn.Module, ids: torch.Tensor) -> float:
    started = time.perf_counter()
    model(input_ids=ids, use_cache=False)
    return time.perf_counter() - started


def chance_levels(tasks: Sequence[str]) -> dict[str, float]:
    """Accuracy of uniform guessing for each task (for the dotted lines in the figures)."""
    return {name: TASKS[name].chance for name in resolve_tasks(list(tasks))}
