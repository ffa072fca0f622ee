"""Claim (d)'s reading of the healing controls: what healing wins back on each held-out domain, net of the
control, against the share of QA accuracy it wins back (`study.steps.healing_controls` writes the rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .criteria import HELD, INCONCLUSIVE, NOT_HELD
from .statistics import MARGINS, net_recovery

_LOSS = MARGINS["loss"]


def recovery_verdict(
    healing: dict, other: dict, accuracy_share: float, accuracy_interval: tuple[float, float]
) -> tuple[str, str]:
    """Claim (d) at one controlled fraction, from `net_recovery` on the healing corpus's domain and on the other
    domain (each with its 95% interval over the held-out blocks, "low" and "high") and the share of the QA accuracy
    won back with its 95% interval (the healed-minus-pruned interval over the accuracy pruning lost): the verdict and,
    unless held, why. A domain recovers where its net gain exceeds the loss margin and its interval excludes zero;
    it is shown not to where the interval lies below the margin. The two shares are compared by their intervals:
    the loss's is larger where its interval lies above the accuracy's, the accuracy's as large where its interval
    lies at or above the loss's; overlapping intervals resolve neither."""
    margin = _LOSS.value
    if other["gap"] <= margin:
        return INCONCLUSIVE, f"pruning costs the other domain {other['gap']:.2f} nats, within the margin"
    if not _recovers(other):
        if _recovers(healing) and other["high"] < margin:
            return NOT_HELD, (
                "the recovery on the healing domain disappears on the other (its interval lies below the margin): "
                "healing only fit its domain"
            )
        return INCONCLUSIVE, f"the other domain's net recovery is not resolved beyond the +-{margin:.2f} nats margin"
    if np.isnan(accuracy_share):
        return INCONCLUSIVE, "pruning lost no accuracy to recover"
    qa_low, qa_high = accuracy_interval
    if np.isnan(qa_low) or np.isnan(qa_high):
        return INCONCLUSIVE, "no paired comparison of the healed and pruned accuracy"
    loss_low, loss_high = other["low"] / other["gap"], other["high"] / other["gap"]
    shares = f"loss {loss_low:.0%} to {loss_high:.0%} of its gap, accuracy {qa_low:.0%} to {qa_high:.0%}"
    if qa_low >= loss_high:
        return NOT_HELD, f"the accuracy recovers as large a share: {shares} (95% intervals)"
    if loss_low > qa_high:
        return HELD, ""
    return INCONCLUSIVE, f"the two shares are not resolved apart: {shares} (95% intervals)"


def _recovers(domain: dict) -> bool:
    """Whether healing's net gain on a domain exceeds the loss margin and is resolved (its interval excludes 0)."""
    return domain["net"] > _LOSS.value and domain["low"] > 0


def controls_at(controls: pd.DataFrame, row: pd.Series) -> dict[str, dict] | None:
    """`net_recovery` of the healing controls of the same block as sweep row `row` (same strategy and number of
    layers removed), by domain ("healing", "other"), with the corpus's name; None where there are none."""
    if controls.empty:
        return None
    same = controls[(controls["strategy"] == row["strategy"]) & (controls["n"] == row["n"])]
    if set(same["domain"]) < {"healing", "other"}:
        return None
    found = {}
    for _, line in same.iterrows():
        found[line["domain"]] = net_recovery(line) | {
            "corpus": line["corpus"], "domain": line["domain"],
            "low": line["net gain low"], "high": line["net gain high"],
        }  # fmt: skip
    return found


def recovered(pruned: float, healed: float, unpruned: float) -> float:
    """The share of what pruning lost that healing won back (for a loss or an accuracy alike)."""
    lost = pruned - unpruned
    return float((pruned - healed) / lost) if lost else float("nan")
