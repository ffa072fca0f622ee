"""Uncertainty for the study's claims: bootstrap intervals for D and l*(n) over the profiled sequences, Wilson
intervals for an accuracy, and paired comparisons of two models on the same questions. One rule decides each
paired accuracy comparison: McNemar's exact test, with the Clopper-Pearson interval of the discordant split as its
interval (they never disagree), two one-sided exact tests against a margin declared in advance (`MARGINS`) for
equivalence, and Holm's correction over each family of comparisons; a graded per-question measure is compared by a
paired t test the same way. Every comparison ends in one of three outcomes: different, equivalent, inconclusive."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from ..similarity import DistanceProfile

Z95 = 1.959963984540054
Z90 = 1.6448536269514722
ALPHA = 0.05  # every test here is at 5%: two-sided for differences, each one-sided test of an equivalence
POWER = 0.80  # the power at which a comparison's minimum detectable difference is given


def wilson_interval(successes: float, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion."""
    if total <= 0:
        return math.nan, math.nan
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


DIFFERENT, EQUIVALENT, INCONCLUSIVE = "different", "equivalent", "inconclusive"
"""The three outcomes of every comparison (`outcome`)."""


@dataclass(frozen=True)
class Margin:
    """An equivalence margin declared before any result is seen: differences within +-`value` (in `unit`) count as
    the same; `reason` says why this value."""

    value: float
    unit: str
    reason: str


MARGINS: dict[str, Margin] = {
    "accuracy": Margin(
        0.05,
        "accuracy, absolute",
        "the paper reads its plateaus off figures where a few points of MMLU are within the noise of one model, and "
        "calls a fall of 10+ points a collapse; 5 points is half that, and a pruned model within 5 points of the "
        "unpruned one is what 'holds its accuracy' means in practice",
    ),
    "chance": Margin(
        0.05,
        "accuracy above chance, absolute",
        "'collapses to chance' means no better than guessing: an accuracy shown (90% Wilson bound) to be less than "
        "5 points above chance, or below it (a damaged model may prefer one letter and fall under 1/k)",
    ),
    "graded": Margin(
        0.05,
        "probability of the right answer, absolute",
        "the same 5 points as for accuracy, on the probability the model gives the right answer: a graded "
        "measure moves with every question, so it resolves far smaller effects than right/wrong at the same "
        "margin",
    ),
    "loss": Margin(
        0.05,
        "held-out loss, nats",
        "0.05 nats (about 5% in perplexity) is the smallest gap read as one model or strategy beating another; "
        "a gap is compared block by block on the same held-out blocks (paired t interval over the blocks), and "
        "one shown within +-0.05 is a tie",
    ),
}
"""Every margin a verdict uses, with its reason (chapter 7's criteria table shows them)."""


def outcome(p_value: float, p_equivalence: float, alpha: float = ALPHA) -> str:
    """One of the three outcomes of a comparison: "equivalent" when the two one-sided tests both reject a
    difference as large as the margin (the 90% interval lies inside +-margin, whether or not a smaller difference
    is resolved), "different" when the test of no difference rejects (p < alpha) and equivalence is not shown,
    "inconclusive" when neither test rejects: no evidence of a difference is never read as sameness."""
    if p_equivalence < alpha:
        return EQUIVALENT
    if p_value < alpha:
        return DIFFERENT
    return INCONCLUSIVE


@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A on the same questions, right (1) or wrong (0): the accuracy difference B - A, the
    discordant counts (A right and B wrong, and the reverse) and McNemar's exact two-sided p, which decides. The
    95% interval [low, high] is the central Clopper-Pearson interval of the discordant split b_only / (a_only +
    b_only) mapped to the difference (times the discordant share of the questions): it excludes 0 exactly when
    p < 0.05. The equivalence test (two one-sided exact tests at +-`margin`, p_equivalence) uses the 90%
    interval of the same construction [low90, high90], widened outwards by the 95% upper bound of the discordant
    share (so that a few questions on which two models happen to agree cannot show them equivalent).
    `detectable` is the smallest difference this comparison detects with 80% power at two-sided 5%, from its own
    discordance."""

    questions: int
    difference: float
    low: float
    high: float
    a_only: int
    b_only: int
    p_value: float
    low90: float = math.nan
    high90: float = math.nan
    margin: float = math.nan
    p_equivalence: float = 1.0
    detectable: float = math.nan

    @property
    def resolved(self) -> bool:
        """True when McNemar's test rejects no difference at 5% (the same as: the 95% interval excludes 0)."""
        return self.p_value < ALPHA

    @property
    def outcome(self) -> str:
        return outcome(self.p_value, self.p_equivalence)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval [low, high] of a difference excludes 0: a resolved difference."""
    return low > 0 or high < 0


def paired_comparison(
    a: Mapping[str, float], b: Mapping[str, float], *, margin: float = MARGINS["accuracy"].value
) -> PairedComparison:
    """Compare per-question scores (1 right, 0 wrong) of two models over the questions both answered."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise InvalidInputError("the two evaluations share no question; evaluate both with the same limit and seed")
    x = np.array([a[q] for q in shared])
    y = np.array([b[q] for q in shared])
    a_only, b_only = int(((x == 1) & (y == 0)).sum()), int(((x == 0) & (y == 1)).sum())
    return counts_comparison(len(shared), a_only, b_only, margin=margin, difference=float((y - x).mean()))


def counts_comparison(
    questions: int,
    a_only: int,
    b_only: int,
    *,
    margin: float = MARGINS["accuracy"].value,
    difference: float | None = None,
) -> PairedComparison:
    """`PairedComparison` from the counts alone: `questions` asked, `a_only` right only for A, `b_only` only for B."""
    if questions <= 0 or a_only < 0 or b_only < 0 or a_only + b_only > questions:
        raise InvalidInputError(f"impossible counts: {a_only} + {b_only} discordant of {questions} questions")
    p_value = mcnemar_exact(a_only, b_only)
    low, high = discordant_interval(questions, a_only, b_only, 1 - ALPHA)
    low90, high90 = discordant_interval(questions, a_only, b_only, 1 - 2 * ALPHA, widen=True)
    return PairedComparison(
        questions=questions,
        difference=(b_only - a_only) / questions if difference is None else difference,
        low=low,
        high=high,
        a_only=a_only,
        b_only=b_only,
        p_value=p_value,
        low90=low90,
        high90=high90,
        margin=margin,
        p_equivalence=mcnemar_equivalence(questions, a_only, b_only, margin),
        detectable=mcnemar_detectable(questions, a_only + b_only),
    )


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: the discordant pairs split as Binomial(a_only + b_only, 1/2)."""
    total = a_only + b_only
    tail = sum(math.comb(total, k) for k in range(min(a_only, b_only) + 1)) / 2**total
    return min(1.0, 2 * tail)


def clopper_pearson(successes: int, total: int, level: float = 1 - ALPHA) -> tuple[float, float]:
    """The central Clopper-Pearson interval of a binomial proportion (each tail (1 - level) / 2)."""
    from scipy.stats import beta

    if total <= 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, total - successes + 1))
    high = 1.0 if successes == total else float(beta.ppf(1 - tail, successes + 1, total - successes))
    return low, high


def discordant_upper(questions: int, discordant: int, level: float = 1 - ALPHA) -> float:
    """The one-sided upper Clopper-Pearson bound (at `level`) of the share of questions two models disagree on."""
    from scipy.stats import beta

    return 1.0 if discordant >= questions else float(beta.ppf(level, discordant + 1, questions - discordant))


def discordant_interval(
    questions: int, a_only: int, b_only: int, level: float, *, widen: bool = False
) -> tuple[float, float]:
    """The Clopper-Pearson interval of the split b_only / (a_only + b_only) at `level`, mapped to the accuracy
    difference B - A = (discordant / questions) * (2 * split - 1). The interval of the split is on the side of 1/2
    that McNemar's exact test at 1 - level says (so the two never disagree, even by a rounding). With `widen`, the
    bounds away from 0 are scaled by the 95% upper bound of the discordant share instead of its estimate."""
    discordant = a_only + b_only
    if discordant == 0:
        bound = discordant_upper(questions, 0) if widen else 0.0
        return (-bound if bound else 0.0), bound
    low, high = clopper_pearson(b_only, discordant, level)
    if mcnemar_exact(a_only, b_only) < 1 - level:  # resolved: the split's interval lies on one side of 1/2
        if b_only > a_only:
            low = max(low, math.nextafter(0.5, 1))
        else:
            high = min(high, math.nextafter(0.5, 0))
    else:
        low, high = min(low, 0.5), max(high, 0.5)
    share = discordant / questions
    outer = discordant_upper(questions, discordant) if widen else share
    return (outer if low < 0.5 else share) * (2 * low - 1), (outer if high > 0.5 else share) * (2 * high - 1)


def mcnemar_equivalence(questions: int, a_only: int, b_only: int, margin: float) -> float:
    """The p-value of two one-sided exact tests that |B - A| >= margin (the larger of the two): conditional on the
    discordant pairs, each is a binomial tail of the split at 1/2 -+ margin / (2 * u), with u the 95% upper bound of
    the discordant share (`discordant_interval(..., widen=True)` at 90% is its interval)."""
    from scipy.stats import binom

    discordant = a_only + b_only
    bound = discordant_upper(questions, discordant)
    if discordant == 0:
        return 0.0 if bound < margin else 1.0
    half = margin / (2 * bound)
    below = 0.0 if half >= 0.5 else float(binom.sf(b_only - 1, discordant, 0.5 - half))  # H0: B - A <= -margin
    above = 0.0 if half >= 0.5 else float(binom.cdf(b_only, discordant, 0.5 + half))  # H0: B - A >= margin
    return max(below, above)


def mcnemar_detectable(questions: int, discordant: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """The smallest accuracy difference McNemar's test detects with `power` at two-sided `alpha` on `questions`
    questions, at the observed discordant share (at least one question): the root of
    z_(alpha/2) sqrt(d) + z_power sqrt(d - delta^2) = delta sqrt(questions) (Connor's normal approximation)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    share = max(discordant, 1) / questions
    za, zb = norm.ppf(1 - alpha / 2), norm.ppf(power)

    def gap(delta: float) -> float:
        return za * math.sqrt(share) + zb * math.sqrt(max(share - delta * delta, 0.0)) - delta * math.sqrt(questions)

    top = math.sqrt(share)
    return float(brentq(gap, 0.0, top)) if gap(top) < 0 else top


@dataclass(frozen=True)
class GradedComparison:
    """Model B against model A on a graded per-question measure (e.g. the probability of the right answer): the
    mean paired difference B - A with its 95% paired-t interval and p, the two one-sided t tests at +-`margin`
    (p_equivalence, 90% interval [low90, high90]) and the smallest difference detectable with 80% power at
    two-sided 5% from the standard deviation of the differences."""

    questions: int
    difference: float
    low: float
    high: float
    p_value: float
    low90: float
    high90: float
    margin: float
    p_equivalence: float
    detectable: float
    sd: float

    @property
    def outcome(self) -> str:
        return outcome(self.p_value, self.p_equivalence)


def graded_comparison(
    a: Mapping[str, float], b: Mapping[str, float], *, margin: float = MARGINS["graded"].value
) -> GradedComparison:
    """Compare graded per-question scores (floats) of two models over the questions both have: a paired t test."""
    from scipy.stats import t

    shared = sorted(set(a) & set(b))
    if not shared:
        raise InvalidInputError("the two evaluations share no graded question")
    diff = np.array([b[q] - a[q] for q in shared], dtype=float)
    count, mean = len(diff), float(diff.mean())
    if count < 2:
        nan = math.nan
        return GradedComparison(count, mean, nan, nan, 1.0, nan, nan, margin, 1.0, nan, nan)
    sd = float(diff.std(ddof=1))
    se, df = sd / math.sqrt(count), count - 1
    detectable = float((t.ppf(1 - ALPHA / 2, df) + t.ppf(POWER, df)) * se)
    if se == 0:
        p_value = 1.0 if mean == 0 else 0.0
        p_equivalence = 0.0 if abs(mean) < margin else 1.0
        return GradedComparison(count, mean, mean, mean, p_value, mean, mean, margin, p_equivalence, detectable, sd)
    q95, q90 = float(t.ppf(1 - ALPHA / 2, df)), float(t.ppf(1 - ALPHA, df))
    p_value = float(2 * t.sf(abs(mean) / se, df))
    p_equivalence = float(max(t.sf((mean + margin) / se, df), t.cdf((mean - margin) / se, df)))
    return GradedComparison(
        count, mean, mean - q95 * se, mean + q95 * se, p_value, mean - q90 * se, mean + q90 * se, margin,
        p_equivalence, detectable, sd,
    )  # fmt: skip


def block_comparison(
    a: Sequence[float], b: Sequence[float], *, margin: float = MARGINS["loss"].value
) -> GradedComparison:
    """B - A on the same held-out blocks (each block's mean loss, nats, in the same order): the paired t test over
    the blocks of `graded_comparison`, at the loss margin (equal tokens per block: the mean over the blocks is the
    token-weighted loss)."""
    if len(a) != len(b) or len(a) == 0:
        raise InvalidInputError(f"block losses must pair up: {len(a)} against {len(b)} blocks")
    return graded_comparison(
        {str(i): float(v) for i, v in enumerate(a)}, {str(i): float(v) for i, v in enumerate(b)}, margin=margin
    )


def draws_gap(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> GradedComparison | None:
    """`block_comparison` of B's held-out loss minus A's, where each side is one or more draws of per-block losses
    on the same blocks (a seeded strategy's distinct blocks), averaged block by block; None where a side kept no
    per-block losses or the draws do not pair up."""
    sides = [list(a), list(b)]
    size = len(sides[0][0]) if sides[0] and sides[0][0] else 0
    if not size or not all(side and all(len(draw) == size for draw in side) for side in sides):
        return None
    return block_comparison(*(list(np.mean(side, axis=0)) for side in sides))


def net_recovery(row: Mapping[str, Any]) -> dict[str, float]:
    """One domain's row of the healing controls (held-out losses of the "unpruned", "pruned", "pruned + healed" and
    "unpruned + healed" models): the pruning loss gap, what the unpruned model healed alike gains (the control),
    the net loss healing wins back, (pruned - healed) - (unpruned - unpruned healed), and its share of the gap."""
    gap = float(row["pruned"] - row["unpruned"])
    control = float(row["unpruned"] - row["unpruned + healed"])
    net = float(row["pruned"] - row["pruned + healed"]) - control
    return {"gap": gap, "control": control, "net": net, "share": net / gap if gap else float("nan")}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values of one family of tests (in the order given; NaN stays NaN)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running, count = 0.0, len(indexed)
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (count - rank) * p))
        adjusted[i] = running
    return adjusted


def at_chance(accuracy: float, total: int, chance: float, margin: float = MARGINS["chance"].value) -> bool:
    """Whether an accuracy over `total` questions is shown to be at chance: the upper bound of its 90% Wilson
    interval (a one-sided 5% test) is below chance + margin. An accuracy below chance counts as at chance."""
    return wilson_interval(accuracy * total, total, Z90)[1] < chance + margin


def above_chance(accuracy: float, total: int, chance: float) -> bool:
    """Whether an accuracy is resolved above chance: the lower bound of its 95% Wilson interval is above it."""
    return wilson_interval(accuracy * total, total)[0] > chance


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
