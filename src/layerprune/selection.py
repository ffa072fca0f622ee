"""Which layers to prune: the paper's most-similar block, its simple "last layers" heuristic, and baselines."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .similarity import DistanceProfile
from .validation import check_choice, check_fraction, check_int

STRATEGIES = ("similarity", "last", "random", "block_influence")
PROFILE_STRATEGIES = ("similarity", "block_influence")


@dataclass(frozen=True)
class BlockSelection:
    """Layers chosen for removal (sorted, in the model's numbering).

    For the contiguous strategies ("similarity", "last", "random") `start` is the first layer and `distance` is
    D[n, start], the distance between the block's input and output. For "block_influence" the layers need not be
    contiguous: `start` is None and `distance` is the sum of their single-layer distances D[1, l].
    `distance` is None when the selection was made without a profile.
    """

    layers: tuple[int, ...]
    n: int
    strategy: str
    distance: float | None
    start: int | None


def select_block(profile: DistanceProfile, n: int, strategy: str = "similarity", *, seed: int = 0) -> BlockSelection:
    """Choose n layers to remove with a strategy from STRATEGIES (see `BlockSelection`).

    "similarity": l*(n) = argmin_l D[n, l], layers l*..l*+n-1 (the paper; ties go to the shallowest block).
    "last": layers L-1-n..L-2, just before the final layer, which is always kept (the paper's heuristic).
    "random": a contiguous block with a start drawn uniformly (seeded) from 0..L-n.
    "block_influence": the n layers with the smallest D[1, l] (ShortGPT-style), possibly non-contiguous.
    """
    check_choice("strategy", strategy, STRATEGIES)
    n = _check_n(n, profile.num_layers)
    if strategy == "similarity":
        start = int(np.argmin(profile.curve(n)))
        return _contiguous(start, n, strategy, profile)
    if strategy == "block_influence":
        single = profile.curve(1)[: profile.num_layers]
        layers = tuple(sorted(int(i) for i in np.argsort(single, kind="stable")[:n]))
        return BlockSelection(layers, n, strategy, float(sum(single[i] for i in layers)), None)
    return profile_free_block(profile.num_layers, n, strategy, seed=seed, profile=profile)


def profile_free_block(
    num_layers: int, n: int, strategy: str, *, seed: int = 0, profile: DistanceProfile | None = None
) -> BlockSelection:
    """A "last" or "random" block, which need no distances; `distance` is filled in from `profile` if given."""
    check_choice("strategy", strategy, STRATEGIES)
    if strategy in PROFILE_STRATEGIES:
        allowed = [s for s in STRATEGIES if s not in PROFILE_STRATEGIES]
        raise InvalidInputError(f"strategy {strategy!r} needs a distance profile; without one use {allowed}")
    n = _check_n(n, num_layers)
    start = num_layers - 1 - n if strategy == "last" else random.Random(seed).randint(0, num_layers - n)
    return _contiguous(start, n, strategy, profile)


def layers_for_fraction(num_layers: int, fraction: float) -> int:
    """The number of layers a fraction of `num_layers` stands for: the nearest integer, halves rounded up."""
    check_fraction("fraction", fraction)
    check_int("num_layers", num_layers, 1)
    return math.floor(fraction * num_layers + 0.5)


def block_for_fraction(
    profile: DistanceProfile | int, fraction: float, strategy: str = "similarity", *, seed: int = 0
) -> BlockSelection | None:
    """The block a strategy removes for a fraction of the model's layers; None when the fraction rounds to no
    layer (the unpruned model). `profile` may be the layer count alone for "last" and "random"."""
    num_layers = profile if isinstance(profile, int) else profile.num_layers
    n = layers_for_fraction(num_layers, fraction)
    if n >= num_layers:
        raise InvalidInputError(f"fraction {fraction!r} of {num_layers} layers is {n} layer(s); keep at least one")
    if not n:
        return None
    if isinstance(profile, int):
        return profile_free_block(num_layers, n, strategy, seed=seed)
    return select_block(profile, n, strategy, seed=seed)


def _contiguous(start: int, n: int, strategy: str, profile: DistanceProfile | None) -> BlockSelection:
    distance = None if profile is None else float(profile.mean[n, start])
    return BlockSelection(tuple(range(start, start + n)), n, strategy, distance, start)


def _check_n(n: int, num_layers: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= num_layers - 1:
        raise InvalidInputError(
            f"n (layers to remove) must be an integer in 1..{num_layers - 1} for a {num_layers}-layer model "
            f"(at least one layer is kept), got {n!r}"
        )
    return int(n)
