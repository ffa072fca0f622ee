"""The book's experiments as cached calls: each result is keyed by the model's identity, the exact token
blocks and every setting, so a rerun with the same parameters reuses it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..cache import (
    cached,
    cached_dir,
    decode_records,
    encode_records,
    key_part,
    model_identity,
    pruned_identity,
    tensor_digest,
)
from ..cached_results import cached_heldout_loss, cached_profile
from ..cached_results import cached_logit_lens as cached_logit_lens  # the chapters call all three from here
from ..evaluation.generation import greedy_generate
from ..evaluation.tasks import TASKS, resolve_tasks
from ..machine import timing_machine
from ..similarity import DistanceProfile
from ..speed.measure import Stopwatch
from ..surgery import prune_fraction

if TYPE_CHECKING:
    from ..healing.training import HealResult


def pruned_losses(
    model: nn.Module,
    profile: DistanceProfile,
    blocks: torch.Tensor,
    fractions: Sequence[float],
    strategies: Sequence[str],
    *,
    seed: int = 0,
    random_seeds: int = 1,
    influence_profile: DistanceProfile | None = None,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """Held-out loss (not healed) after removing each fraction of layers with each strategy, one row each; the
    "random" baseline once per seed (seeds `seed` .. `seed + random_seeds - 1`, a `seed` column tells them
    apart); "block_influence" ranks layers by `influence_profile` when given (`shortgpt_profile`)."""
    identity = model_identity(model)
    rows = []
    for fraction in tqdm(fractions, desc="fractions", leave=False):
        for strategy in strategies:
            chosen = influence_profile if strategy == "block_influence" and influence_profile else profile
            seeds = range(seed, seed + random_seeds) if strategy == "random" else [seed]
            for draw in seeds:
                pruned = prune_fraction(model, chosen, fraction, strategy, seed=draw)
                loss = cached_heldout_loss(
                    pruned.model,
                    blocks,
                    batch_size=batch_size,
                    progress=False,
                    identity=pruned_identity(identity, pruned.layers),
                )
                rows.append(
                    {
                        "fraction": fraction,
                        "n": pruned.n,
                        "strategy": strategy,
                        "seed": draw,
                        "layers": list(pruned.layers),
                        "loss": loss.loss,
                        "normalized loss": loss.normalized,
                    }
                )
    return rows


def shortgpt_profile(
    model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 8, progress: bool = True
) -> DistanceProfile:
    """The profile ShortGPT's Block Influence ranks layers by: 1 - cos(x^(l), x^(l+1)) averaged over every token
    (`token="all"`, `metric="cosine"`), for `select_block(..., "block_influence")`."""
    return cached_profile(model, blocks, token="all", metric="cosine", batch_size=batch_size, progress=progress)


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


def heal_cached(
    model: nn.Module, tokenizer, blocks: torch.Tensor, *, seed: int = 0, progress: bool = True, **settings: Any
) -> HealResult:
    """`heal` with its checkpoints in the cache, keyed by the pruned model, the data and the settings: a rerun
    resumes from (or simply reloads) the last checkpoint instead of training again."""
    from ..healing.training import heal  # peft and bitsandbytes load only when a chapter heals

    key = {"model": model_identity(model), "blocks": tensor_digest(blocks), "seed": seed, **settings}
    with cached_dir("heal", key) as directory:  # another process healing it waits, then reloads the checkpoint
        return heal(model, tokenizer, blocks, seed=seed, checkpoint_dir=directory, progress=progress, **settings)


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
    a benchmark, keyed by this machine too."""
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
        pruned = prune_fraction(model, profile, fraction, strategy, seed=seed)
        ids = batch.to(next(pruned.model.parameters()).device)
        pruned.model(input_ids=ids, use_cache=False)
        best = min(_forward_seconds(pruned.model, ids) for _ in range(repeats))
        rows.append(
            {
                "fraction": fraction,
                "n": pruned.n,
                "parameters": sum(p.numel() for p in pruned.model.parameters()),
                "tokens per second": ids.numel() / best,
            }
        )
    return rows


def _forward_seconds(model: nn.Module, ids: torch.Tensor) -> float:
    with Stopwatch(ids.device) as watch:
        model(input_ids=ids, use_cache=False)
    return watch.seconds


def chance_levels(tasks: Sequence[str]) -> dict[str, float]:
    """Accuracy of uniform guessing for each task (for the dotted lines in the figures)."""
    return {name: TASKS[name].chance for name in resolve_tasks(list(tasks))}


def mean_over_seeds(rows: Sequence[Mapping[str, Any]], value: str = "loss") -> list[dict[str, Any]]:
    """`pruned_losses` rows with each fraction's random draws replaced by one row: their mean `value`, its sample
    standard deviation (`<value> sd`) and the number of draws (`seeds`)."""
    kept = [dict(row) for row in rows if row["strategy"] != "random"]
    draws: dict[float, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["strategy"] == "random":
            draws.setdefault(row["fraction"], []).append(row)
    for fraction, group in draws.items():
        values = np.array([row[value] for row in group])
        kept.append(
            {
                "fraction": fraction,
                "n": group[0]["n"],
                "strategy": "random",
                value: float(values.mean()),
                f"{value} sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "seeds": len(values),
            }
        )
    return sorted(kept, key=lambda row: row["fraction"])
