"""The study's expensive steps, each cached through the one front end (`layerprune.cache.cached`, one entry per
kind and key, one lock per entry): the distance profile (with each sequence's distances, for bootstrap intervals),
the logit lens, the held-out loss, generations and healing runs, keyed by the model's identity, the exact token
blocks and every setting, so that the book, the benchmarks and any rerun share one entry. Every function here is
named `cached_<result>`, or composes them."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..adapters import model_name
from ..cache import blocks_digest, cached, cached_dir, model_identity, pruned_identity, tensor_digest
from ..evaluation.generation import greedy_generate
from ..evaluation.tasks import TASKS, resolve_tasks
from ..lens import LogitLens, logit_lens
from ..loss import HeldoutLoss, heldout_loss
from ..selection import get_strategy, layers_for_fraction, ranking_profile
from ..similarity import DistanceProfile, profile_distances
from ..surgery import prune_fraction
from . import files
from .statistics import block_comparison, net_recovery

if TYPE_CHECKING:
    from ..healing.training import HealResult

T = TypeVar("T")


def cached_profile(
    model: nn.Module,
    blocks: torch.Tensor | Mapping[str, torch.Tensor],
    *,
    token: str = "last",
    metric: str = "angular",
    batch_size: int = 8,
    progress: bool = True,
) -> DistanceProfile:
    """`profile_distances` with each sequence's distances kept (for bootstrap intervals), cached; the profile
    carries this model's name even when another run computed it."""
    identity = model_identity(model)
    key = {"model": identity, "blocks": blocks_digest(blocks), "token": token, "metric": metric, "sequences": True}
    profile = cached(
        "profile",
        key,
        lambda: profile_distances(
            model,
            blocks,
            token=token,
            metric=metric,
            batch_size=batch_size,
            progress=progress,
            identity=identity,
            keep_sequences=True,
        ),
        encode=DistanceProfile.to_dict,
        decode=DistanceProfile.from_dict,
    )
    return dataclasses.replace(profile, model_name=model_name(model))


def cached_logit_lens(
    model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 4, progress: bool = True
) -> LogitLens:
    """`logit_lens`, cached."""
    compute = functools.partial(logit_lens, model, blocks, batch_size=batch_size, progress=progress)
    return _cached_on_blocks("lens", model_identity(model), blocks, compute, LogitLens)


def cached_heldout_loss(
    model: nn.Module, blocks: torch.Tensor, *, batch_size: int = 8, progress: bool = True, identity: str | None = None
) -> HeldoutLoss:
    """`heldout_loss` with each block's loss, cached (pass `identity` when it is already known, to skip hashing the
    weights); entries cached before block losses were kept are computed again, once."""
    compute = functools.partial(heldout_loss, model, blocks, batch_size=batch_size, progress=progress)
    identity = identity or model_identity(model)
    return _cached_on_blocks("heldout", identity, blocks, compute, HeldoutLoss, {"block_losses": True})


def _cached_on_blocks(
    kind: str,
    identity: str,
    blocks: torch.Tensor,
    compute: Callable[[], T],
    result: type[T],
    version: Mapping[str, Any] | None = None,
) -> T:
    """A result of a model on token blocks (a dataclass with `as_dict`), cached by model identity and blocks (and
    `version`, the fields that set a new result format apart from older entries)."""
    key = {"model": identity, "blocks": tensor_digest(blocks), **(version or {})}
    return cached(kind, key, compute, encode=lambda value: value.as_dict(), decode=lambda value: result(**value))


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
    """Held-out loss (not healed) after removing each fraction of layers with each strategy, one row each; a
    seeded baseline ("random") once per seed (seeds `seed` .. `seed + random_seeds - 1`, a `seed` column tells
    them apart), each seed a distinct block (as many as there are: L-n+1 at most); a strategy that ranks by
    influence ("block_influence") reads `influence_profile` when given (`shortgpt_profile`)."""
    identity = model_identity(model)
    rows = []
    for fraction in tqdm(fractions, desc="fractions", leave=False):
        for strategy in strategies:
            chosen = ranking_profile(strategy, profile, influence_profile)
            draws = min(random_seeds, profile.num_layers - layers_for_fraction(profile.num_layers, fraction) + 1)
            seeds = range(seed, seed + draws) if get_strategy(strategy).seeded else [seed]
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
                        "model": model_name(model),
                        "fraction": fraction,
                        "n": pruned.n,
                        "fraction removed": pruned.n / profile.num_layers,
                        "strategy": strategy,
                        "seed": draw,
                        "layers": list(pruned.layers),
                        "loss": loss.loss,
                        "normalized loss": loss.normalized,
                        files.BLOCK_LOSSES: files.block_losses_cell(loss.block_losses),
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


def cached_heal(
    model: nn.Module, tokenizer, blocks: torch.Tensor, *, seed: int = 0, progress: bool = True, **settings: Any
) -> HealResult:
    """`heal` with its checkpoints in the cache, keyed by the pruned model, the data and the settings: a rerun
    resumes from (or simply reloads) the last checkpoint instead of training again."""
    from ..healing.training import heal  # peft and bitsandbytes load only when a chapter heals

    key = {"model": model_identity(model), "blocks": tensor_digest(blocks), "seed": seed, **settings}
    with cached_dir("heal", key) as directory:  # another process healing it waits, then reloads the checkpoint
        return heal(model, tokenizer, blocks, seed=seed, checkpoint_dir=directory, progress=progress, **settings)


def healing_controls(
    model: nn.Module,
    pruned: nn.Module,
    tokenizer,
    heal_blocks: torch.Tensor,
    heldout: Mapping[str, torch.Tensor],
    heal_settings: Mapping[str, Any],
    *,
    seed: int = 0,
    batch_size: int = 8,
) -> list[dict[str, Any]]:
    """What healing wins back, against its controls: the unpruned `model`, its `pruned` copy (`surgery.prune`), the
    pruned model healed and the unpruned model healed with the same blocks, seed and settings (`cached_heal`), each
    scored on the held-out blocks of every corpus in `heldout` ({corpus: blocks}; the first is the healing corpus's
    own held-out split, the others text of other domains). One row per corpus: the four losses,
    `net_recovery`'s gap, control gain, net gain and share, and the net gain's 95% interval over the held-out blocks
    (`statistics.block_comparison` of the control's gain and the pruned model's, block by block)."""
    record = getattr(pruned.config, "layerprune", None) or {}
    layers = list(record.get("removed_layers", []))
    total = record.get("original_num_layers", model.config.num_hidden_layers)
    variants = {
        "unpruned": model,
        "pruned": pruned,
        "pruned + healed": cached_heal(
            pruned, tokenizer, heal_blocks, seed=seed, progress=False, **heal_settings
        ).model,
        "unpruned + healed": cached_heal(
            model, tokenizer, heal_blocks, seed=seed, progress=False, **heal_settings
        ).model,
    }
    rows = []
    for index, (corpus, blocks) in enumerate(heldout.items()):
        losses = {
            name: cached_heldout_loss(candidate, blocks, batch_size=batch_size, progress=False)
            for name, candidate in variants.items()
        }
        row = {
            "model": model_name(model), "strategy": record.get("strategy"), "n": len(layers), "model layers": total,
            "fraction removed": len(layers) / total, "layers": " ".join(map(str, layers)), "corpus": corpus,
            "domain": "healing" if index == 0 else "other", **{name: loss.loss for name, loss in losses.items()},
        }  # fmt: skip
        recovery = net_recovery(row)
        net = block_comparison(_gains(losses["unpruned"], losses["unpruned + healed"]),
                               _gains(losses["pruned"], losses["pruned + healed"]))  # fmt: skip
        rows.append(
            row | {"pruning gap": recovery["gap"], "control gain": recovery["control"],
                   "net gain": recovery["net"], "net gain low": net.low, "net gain high": net.high,
                   "net recovered": recovery["share"]}
        )  # fmt: skip
    return rows


def _gains(before: HeldoutLoss, after: HeldoutLoss) -> list[float]:
    """What healing won back on each held-out block (nats): the loss before minus the loss after."""
    return [b - a for b, a in zip(before.block_losses, after.block_losses, strict=True)]


def chance_levels(tasks: Sequence[str]) -> dict[str, float]:
    """Accuracy of uniform guessing for each task (for the dotted lines in the figures)."""
    return {name: TASKS[name].chance for name in resolve_tasks(list(tasks))}


def mean_over_seeds(rows: Sequence[Mapping[str, Any]], value: str = "loss") -> list[dict[str, Any]]:
    """`pruned_losses` rows with each fraction's draws of a seeded strategy ("random") replaced by one row: their
    mean `value`, its sample standard deviation (`<value> sd`) and the number of distinct blocks drawn (`seeds`);
    a block drawn twice counts once."""
    kept = [dict(row) for row in rows if not get_strategy(row["strategy"]).seeded]
    draws: dict[tuple[float, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        if get_strategy(row["strategy"]).seeded:
            group = draws.setdefault((row["fraction"], row["strategy"]), [])
            if "layers" not in row or all(list(row["layers"]) != list(other["layers"]) for other in group):
                group.append(row)
    for (fraction, strategy), group in draws.items():
        values = np.array([row[value] for row in group])
        kept.append(
            {
                "fraction": fraction,
                "n": group[0]["n"],
                **({"fraction removed": group[0]["fraction removed"]} if "fraction removed" in group[0] else {}),
                "strategy": strategy,
                value: float(values.mean()),
                f"{value} sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "seeds": len(values),
            }
        )
    return sorted(kept, key=lambda row: row["fraction"])
