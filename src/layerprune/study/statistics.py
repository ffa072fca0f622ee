"""Uncertainty for the study's claims: bootstrap intervals for D and l*(n) over the profiled sequences, Wilson
intervals for an accuracy, and paired comparisons of two models on the same questions (a paired bootstrap of the
difference and McNemar's exact test)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..similarity import DistanceProfile

Z95 = 1.959963984540054
DRAWS = 2000


def wilson_interval(successes: float, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion."""
    if total <= 0:
        return math.nan, math.nan
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A on the same questions: the accuracy difference B - A with a 95% paired-bootstrap
    interval, the discordant counts (A right and B wrong, and the reverse) and McNemar's exact two-sided p."""

    questions: int
    difference: float
    low: float
    high: float
    a_only: int
    b_only: int
    p_value: float

    @property
    def resolved(self) -> bool:
        """True when the 95% interval excludes 0."""
        return excludes_zero(self.low, self.high)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval [low, high] of a difference excludes 0: a resolved difference."""
    return low > 0 or high < 0


def paired_comparison(
    a: Mapping[str, float], b: Mapping[str, float], *, draws: int = DRAWS, seed: int = 0
) -> PairedComparison:
    """Compare per-question scores (1 right, 0 wrong) of two models over the questions both answered."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise InvalidInputError("the two evaluations share no question; evaluate both with the same limit and seed")
    x = np.array([a[q] for q in shared])
    y = np.array([b[q] for q in shared])
    diff = y - x
    picks = np.random.default_rng(seed).integers(0, len(shared), size=(draws, len(shared)))
    means = diff[picks].mean(axis=1)
    a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    low, high = np.quantile(means, [0.025, 0.975])
    p_value = mcnemar_exact(a_only, b_only)
    return PairedComparison(len(shared), float(diff.mean()), float(low), float(high), a_only, b_only, p_value)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: the discordant pairs split as Binomial(a_only + b_only, 1/2)."""
    total = a_only + b_only
    tail = sum(math.comb(total, k) for k in range(min(a_only, b_only) + 1)) / 2**total
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class BlockBootstrap:
    """l*(n) and D[n, l*] of a profile, with how stable they are under resampling the sequences: the share of
    bootstrap draws that choose the same l*, the most common other choice, and a 95% interval of D[n, l*]."""

    n: int
    start: int
    distance: float
    low: float
    high: float
    same_start: float
    runner_up: int | None


def bootstrap_blocks(profile: DistanceProfile, *, draws: int = 1000, seed: int = 0) -> list[BlockBootstrap]:
    """For every block size n = 1..L-1, resample the profiled sequences with replacement `draws` times."""
    if profile.sequences is None:
        raise InvalidInputError("the profile has no per-sequence distances; profile with keep_sequences=True")
    count = profile.sequences.shape[0]
    picks = np.random.default_rng(seed).integers(0, count, size=(draws, count))
    resampled = profile.sequences[picks].mean(axis=1)  # [draws, L+1, L+1]
    rows = []
    for n in range(1, profile.num_layers):
        width = profile.num_layers - n + 1
        start = int(np.argmin(profile.mean[n, :width]))
        starts = np.argmin(resampled[:, n, :width], axis=1)
        others = starts[starts != start]
        low, high = np.quantile(resampled[:, n, start], [0.025, 0.975])
        rows.append(
            BlockBootstrap(
                n=n,
                start=start,
                distance=float(profile.mean[n, start]),
                low=float(low),
                high=float(high),
                same_start=float((starts == start).mean()),
                runner_up=int(np.bincount(others).argmax()) if others.size else None,
            )
        )
    return rows


def block_rows(profile: DistanceProfile, *, draws: int = 1000, seed: int = 0) -> list[dict[str, object]]:
    """`bootstrap_blocks` as table rows, with the fraction each n stands for and the block's layers."""
    return [
        {
            "model": profile.model_name,
            "layers": profile.num_layers,
            "n": row.n,
            "fraction": row.n / profile.num_layers,
            "start": row.start,
            "removed": f"{row.start}-{row.start + row.n - 1}" if row.n > 1 else str(row.start),
            "D": row.distance,
            "D low": row.low,
            "D high": row.high,
            "same start": row.same_start,
            "runner-up start": row.runner_up,
        }
        for row in bootstrap_blocks(profile, draws=draws, seed=seed)
    ]


def single_layer_rows(profile: DistanceProfile, *, draws: int = 1000, seed: int = 0) -> list[dict[str, object]]:
    """D[1, l], what each single layer changes, for every layer l, with a 95% bootstrap interval over sequences."""
    if profile.sequences is None:
        raise InvalidInputError("the profile has no per-sequence distances; profile with keep_sequences=True")
    count = profile.sequences.shape[0]
    picks = np.random.default_rng(seed).integers(0, count, size=(draws, count))
    single = profile.sequences[:, 1, : profile.num_layers]
    low, high = np.quantile(single[picks].mean(axis=1), [0.025, 0.975], axis=0)
    return [
        {
            "model": profile.model_name,
            "layer": layer,
            "D": profile.mean[1, layer],
            "D low": low[layer],
            "D high": high[layer],
        }
        for layer in range(profile.num_layers)
    ]
