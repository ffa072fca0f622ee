"""Which layers to prune: the paper's most-similar block, its simple "last layers" heuristic, and baselines, each a
`Strategy` registered once (how it chooses, how figures draw it, what tables call it)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import InvalidInputError
from .similarity import DistanceProfile
from .validation import check_choice, check_fraction, check_int


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


Chooser = Callable[[DistanceProfile | None, int, int, int], tuple[int, ...]]
"""(profile or None, number of layers, n, seed) -> the n layers to remove, sorted."""


@dataclass(frozen=True)
class Strategy:
    """A way to choose the layers to remove, registered once (`register_strategy`): `choose` picks them; `colour`
    and `marker` draw it in every figure; `label` names it in legends (the name when empty). `ranks_by` is the
    profile it reads: "profile" (the paper's: angular distance at the last token), "influence" (ShortGPT's block
    influence, `study.steps.shortgpt_profile`) or None (it needs no distances). A `seeded` strategy is a baseline
    drawn anew for each seed (a sweep averages several draws). `contiguous` blocks report D[n, start]; others the
    sum of their layers' D[1, l]."""

    name: str
    choose: Chooser
    colour: str
    marker: str
    label: str = ""
    ranks_by: str | None = "profile"
    seeded: bool = False
    contiguous: bool = True

    @property
    def legend(self) -> str:
        return self.label or self.name


STRATEGIES: dict[str, Strategy] = {}
"""Every registered strategy by name, in registration order."""


def register_strategy(strategy: Strategy) -> Strategy:
    """Add `strategy` to `STRATEGIES` (replacing one of the same name) and return it."""
    if strategy.ranks_by not in ("profile", "influence", None):
        raise InvalidInputError(f"ranks_by must be 'profile', 'influence' or None, got {strategy.ranks_by!r}")
    STRATEGIES[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    """The registered strategy `name` (one clear error for an unknown one)."""
    check_choice("strategy", name, tuple(STRATEGIES))
    return STRATEGIES[name]


def _similarity(profile: DistanceProfile | None, num_layers: int, n: int, seed: int) -> tuple[int, ...]:
    start = int(np.argmin(profile.curve(n)))  # ties go to the shallowest block
    return tuple(range(start, start + n))


def _last(profile: DistanceProfile | None, num_layers: int, n: int, seed: int) -> tuple[int, ...]:
    return tuple(range(num_layers - 1 - n, num_layers - 1))


def _random(profile: DistanceProfile | None, num_layers: int, n: int, seed: int) -> tuple[int, ...]:
    start = random_starts(num_layers, n)[seed % (num_layers - n + 1)]
    return tuple(range(start, start + n))


def random_starts(num_layers: int, n: int) -> list[int]:
    """Every start a contiguous block of n layers can take (0..L-n), in a seeded random order drawn anew for each
    (L, n): the "random" strategy with seed s takes the s-th (modulo their number), so consecutive seeds give
    distinct blocks until every block has been drawn, and the start drawn for one n says nothing of another's."""
    starts = list(range(num_layers - n + 1))
    random.Random(f"random block {num_layers} {n}").shuffle(starts)
    return starts


def _block_influence(profile: DistanceProfile | None, num_layers: int, n: int, seed: int) -> tuple[int, ...]:
    single = profile.curve(1)[:num_layers]
    return tuple(sorted(int(i) for i in np.argsort(single, kind="stable")[:n]))


register_strategy(Strategy("similarity", _similarity, "#0072B2", "o"))
register_strategy(Strategy("last", _last, "#D55E00", "s", ranks_by=None))
register_strategy(Strategy("random", _random, "#CC79A7", "^", ranks_by=None, seeded=True))
register_strategy(Strategy("block_influence", _block_influence, "#009E73", "D", ranks_by="influence", contiguous=False))


def select_block(profile: DistanceProfile, n: int, strategy: str = "similarity", *, seed: int = 0) -> BlockSelection:
    """Choose n layers to remove with a registered strategy (see `BlockSelection`).

    "similarity": l*(n) = argmin_l D[n, l], layers l*..l*+n-1 (the paper; ties go to the shallowest block).
    "last": layers L-1-n..L-2, just before the final layer, which is always kept (the paper's heuristic).
    "random": a contiguous block with a start drawn uniformly from 0..L-n; seeds 0, 1, ... draw distinct blocks
    (`random_starts`).
    "block_influence": the n layers with the smallest D[1, l] (ShortGPT-style), possibly non-contiguous.
    """
    chosen = get_strategy(strategy)
    n = _check_n(n, profile.num_layers)
    return _selection(chosen, chosen.choose(profile, profile.num_layers, n, seed), profile)


def profile_free_block(
    num_layers: int, n: int, strategy: str, *, seed: int = 0, profile: DistanceProfile | None = None
) -> BlockSelection:
    """A block of a strategy that needs no distances ("last", "random"); `distance` is filled in from `profile` if
    given."""
    chosen = get_strategy(strategy)
    if chosen.ranks_by is not None:
        allowed = [name for name, s in STRATEGIES.items() if s.ranks_by is None]
        raise InvalidInputError(f"strategy {strategy!r} needs a distance profile; without one use {allowed}")
    n = _check_n(n, num_layers)
    return _selection(chosen, chosen.choose(profile, num_layers, n, seed), profile)


def ranking_profile(
    strategy: str, profile: DistanceProfile, influence_profile: DistanceProfile | None = None
) -> DistanceProfile:
    """The profile `strategy` ranks layers by: `influence_profile` (ShortGPT's) for a strategy that ranks by
    influence, when given; else `profile`."""
    if get_strategy(strategy).ranks_by == "influence" and influence_profile is not None:
        return influence_profile
    return profile


def _selection(strategy: Strategy, layers: tuple[int, ...], profile: DistanceProfile | None) -> BlockSelection:
    n = len(layers)
    if strategy.contiguous:
        distance = None if profile is None else float(profile.mean[n, layers[0]])
        return BlockSelection(layers, n, strategy.name, distance, layers[0])
    distance = None if profile is None else float(sum(profile.curve(1)[i] for i in layers))
    return BlockSelection(layers, n, strategy.name, distance, None)


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


def _check_n(n: int, num_layers: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= num_layers - 1:
        raise InvalidInputError(
            f"n (layers to remove) must be an integer in 1..{num_layers - 1} for a {num_layers}-layer model "
            f"(at least one layer is kept), got {n!r}"
        )
    return int(n)
