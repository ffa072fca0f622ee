"""Claim (c)'s reading of an accuracy curve against the fraction of layers removed, from the result rows and the
paired comparisons the sweeps wrote: which fractions hold (equivalent to the unpruned model), where the curve is at
chance and stays there (the collapse), and where it rises above chance again (non-monotone). The ledger, the
chapters' sentences and claim (f) read curves only through it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .statistics import DIFFERENT, EQUIVALENT, above_chance, at_chance, wilson_interval


def removed(row: pd.Series | dict) -> float:
    """The fraction of layers a row actually removed (n / L), else its nominal fraction."""
    value = row.get("fraction removed") if hasattr(row, "get") else None
    return float(row["fraction"] if value is None or pd.isna(value) else value)


def fraction_label(row: pd.Series | dict) -> str:
    """A fraction as removed: "4/30 (13%)" where the row knows n and L, else "13%"."""
    layers = row.get("model layers") if hasattr(row, "get") else None
    if layers is not None and not pd.isna(layers) and "n" in row:
        return f"{int(row['n'])}/{int(layers)} ({removed(row):.0%})"
    return f"{removed(row):.0%}"


def _unpruned(rows: pd.DataFrame) -> pd.Series:
    return rows[rows["strategy"] == "none"].iloc[0]


def _above_chance(rows: pd.DataFrame, task: str) -> bool:
    base = rows[rows["strategy"] == "none"]
    if base.empty or pd.isna(base.iloc[0][task]):
        return False
    return resolved_above_chance(base.iloc[0], task)


def accuracy_interval(row: pd.Series, task: str, z: float | None = None) -> tuple[float, float]:
    """The Wilson interval (95%, or at `z`) of a result row's accuracy on `task` (columns `task`, "`task` n")."""
    count = int(row[f"{task} n"])
    return wilson_interval(row[task] * count, count) if z is None else wilson_interval(row[task] * count, count, z)


def resolved_above_chance(row: pd.Series, task: str) -> bool:
    """Whether a result row's accuracy is resolved above chance: its 95% Wilson interval lies above it."""
    return above_chance(row[task], int(row[f"{task} n"]), row[f"{task} chance"])


def is_at_chance(row: pd.Series, task: str) -> bool:
    """Whether a result row's accuracy is shown at chance (`statistics.at_chance`: the 90% Wilson upper bound is
    below chance + the margin)."""
    return at_chance(row[task], int(row[f"{task} n"]), row[f"{task} chance"])


def _curve(rows: pd.DataFrame, strategy: str, stage: str = "pruned") -> pd.DataFrame:
    picked = rows[((rows["strategy"] == strategy) & (rows["stage"] == stage)) | (rows["strategy"] == "none")]
    return picked.assign(_removed=[removed(r) for _, r in picked.iterrows()]).sort_values("_removed")


@dataclass(eq=False)
class Point:
    """One fraction of a curve before healing: its row, its comparison with the unpruned model (None where none
    was made), whether it holds (equivalent to the unpruned model, or resolved above it), drops (resolved below
    it), falls (loses more than the margin: resolved below, and the upper bound of its 90% interval, a one-sided
    5% test, below -margin), and whether it is shown at chance or resolved above chance."""

    row: pd.Series
    comparison: pd.Series | None
    holds: bool
    drops: bool
    falls: bool
    at_chance: bool
    above_chance: bool


@dataclass(eq=False)
class Reading:
    """What a curve before healing shows (claim (c)): its points, the plateau (the fractions from the first on that
    hold, before any that does not), the collapse (the first fraction from which every larger one is at chance),
    the first at chance, and the fractions above chance again after it (a non-monotone curve)."""

    task: str
    points: list[Point] = field(default_factory=list)
    plateau: list[Point] = field(default_factory=list)
    collapse: Point | None = None
    first_chance: Point | None = None
    again: list[Point] = field(default_factory=list)

    @property
    def plateau_end(self) -> float | None:
        return removed(self.plateau[-1].row) if self.plateau else None

    @property
    def collapse_at(self) -> float | None:
        return removed(self.collapse.row) if self.collapse is not None else None


def read_curve(rows: pd.DataFrame, comparisons: pd.DataFrame, task: str, strategy: str = "similarity") -> Reading:
    """Claim (c)'s reading of a strategy's curve before healing (`Reading`), from the result rows and the paired
    comparisons (columns "outcome", "difference")."""
    reading = Reading(task)
    for _, row in _curve(rows, strategy).iterrows():
        if row["strategy"] == "none":
            continue
        paired = find_comparison(comparisons, task, row["fraction"], strategy, "pruned", "unpruned")
        result = None if paired is None else paired.get("outcome")
        up = paired is not None and paired["difference"] > 0
        drops = result == DIFFERENT and not up
        reading.points.append(
            Point(
                row,
                paired,
                holds=result == EQUIVALENT or (result == DIFFERENT and up),
                drops=drops,
                falls=drops and float(paired["high 90"]) < -float(paired["margin"]),
                at_chance=is_at_chance(row, task),
                above_chance=resolved_above_chance(row, task),
            )
        )
    for point in reading.points:
        if not point.holds:
            break
        reading.plateau.append(point)
    for index, point in enumerate(reading.points):
        if all(later.at_chance for later in reading.points[index:]):
            reading.collapse = point
            break
    reading.first_chance = next((point for point in reading.points if point.at_chance), None)
    if reading.first_chance is not None:
        start = reading.points.index(reading.first_chance)
        reading.again = [point for point in reading.points[start + 1 :] if point.above_chance]
    return reading


def collapse_point(
    rows: pd.DataFrame, comparisons: pd.DataFrame, task: str, strategy: str = "similarity"
) -> tuple[float | None, float | None]:
    """(the last fraction of the plateau, the collapse) of a strategy's curve before healing, as fractions
    actually removed, None where there is none (`read_curve`)."""
    reading = read_curve(rows, comparisons, task, strategy)
    return reading.plateau_end, reading.collapse_at


def above_chance_again(rows: pd.DataFrame, task: str, collapse: float, strategy: str = "similarity") -> pd.DataFrame:
    """The points of a strategy's curve before healing, past `collapse`, resolved above chance again."""
    later = _curve(rows, strategy)
    later = later[(later["strategy"] == strategy) & (later["_removed"] > collapse)]
    return later[[resolved_above_chance(row, task) for _, row in later.iterrows()]].drop(columns="_removed")


def find_comparison(
    comparisons: pd.DataFrame, task: str | None, fraction: float, strategy: str, stage: str, versus: str
) -> pd.Series | None:
    """The paired comparison of `strategy` at `stage` against `versus` on `task` at `fraction`, if one was made."""
    if task is None or comparisons.empty:
        return None
    match = comparisons[
        (comparisons["task"] == task)
        & (comparisons["strategy"] == strategy)
        & (comparisons["stage"] == stage)
        & (comparisons["versus"] == versus)
        & np.isclose(comparisons["fraction"], fraction)
    ]
    return None if match.empty else match.iloc[0]


def collapse_span(reading: Reading) -> tuple[float, float]:
    """Where a model's collapse lies, as (lowest, highest) fraction: the collapse fraction twice where the grid
    reaches it, else (the last fraction of the grid, infinity): it comes later than every fraction tried."""
    if reading.collapse_at is not None:
        return reading.collapse_at, reading.collapse_at
    return (removed(reading.points[-1].row) if reading.points else 0.0), math.inf


def surely_before(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether collapse span `first` (`collapse_span`) lies before `second` whatever the unreached ones are: a
    collapse the grid found, before one found later or at or before the last fraction of a grid that found none."""
    found, beyond = first[0] == first[1], math.isinf(second[1])
    return found and (first[1] < second[0] - 1e-9 or (beyond and first[1] <= second[0] + 1e-9))
