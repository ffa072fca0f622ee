"""The method's measurements on token blocks, cached: the distance profile (with each sequence's distances, for
bootstrap intervals), the held-out loss and the logit lens, each keyed by the model's identity and the exact
blocks, so that the book, the benchmarks and any rerun share one entry."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

from .cache import blocks_digest, cached, model_identity, tensor_digest
from .lens import LogitLens, logit_lens
from .loss import HeldoutLoss, heldout_loss
from .similarity import DistanceProfile, model_name, profile_distances

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
    """`heldout_loss`, cached (pass `identity` when it is already known, to skip hashing the weights)."""
    compute = functools.partial(heldout_loss, model, blocks, batch_size=batch_size, progress=progress)
    return _cached_on_blocks("heldout", identity or model_identity(model), blocks, compute, HeldoutLoss)


def _cached_on_blocks(kind: str, identity: str, blocks: torch.Tensor, compute: Callable[[], T], result: type[T]) -> T:
    """A result of a model on token blocks (a dataclass with `as_dict`), cached by model identity and blocks."""
    key = {"model": identity, "blocks": tensor_digest(blocks)}
    return cached(kind, key, compute, encode=lambda value: value.as_dict(), decode=lambda value: result(**value))
