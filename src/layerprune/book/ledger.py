"""The ledger of the paper's claims as the book shows it: a verdict matrix, the evidence with links to the
chapters, and a summary, all from the ledger table (`layerprune.study.claims.ledger_table`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..study.claims import CLAIMS, INCONCLUSIVE, NOT_HELD, VERDICTS, criteria_table


def verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """The ledger at a glance: one row per claim, one column per model (or "all"), the verdict in each cell."""
    matrix = table.pivot(index="claim", columns="model", values="verdict").fillna("")
    models = list(dict.fromkeys(table["model"]))
    matrix = matrix[models].reset_index()
    matrix.insert(1, "statement", [CLAIMS[claim] for claim in matrix["claim"]])
    return matrix.rename_axis(columns=None)


def evidence(table: pd.DataFrame) -> str:
    """The ledger as Markdown: per claim, each model's verdict and its evidence, with a link to the chapter that
    shows the figure."""
    lines = []
    for claim, rows in table.groupby("claim", sort=True):
        lines += [f"**({claim}) {CLAIMS[claim]}**", ""]
        for row in rows.itertuples():
            link = f" ([figure]({Path(row.figure).stem}.ipynb))" if row.figure else ""
            stats = [f"p = {row.p}" if str(row.p) else "", f"detectable +-{row.power}" if str(row.power) else ""]
            stats = "; ".join(part for part in stats if part)
            lines.append(f"- {row.model}: *{row.verdict}*{f' ({stats})' if stats else ''}. {row.evidence}.{link}")
        lines.append("")
    return "\n".join(lines)


def summary(table: pd.DataFrame) -> str:
    """Markdown sentences, built from the ledger: how many verdicts of each kind, and which did not hold or were
    inconclusive (their evidence follows the ledger)."""
    counts = table["verdict"].value_counts()
    kinds = [f"{counts[kind]} {kind}" for kind in VERDICTS if kind in counts]
    lines = [f"Of {len(table)} verdicts, {', '.join(kinds)}."]
    for kind, label in ((NOT_HELD, "Did not hold at this scale"), (INCONCLUSIVE, "Inconclusive")):
        rows = table[table["verdict"] == kind]
        if not rows.empty:
            lines.append(f"{label}: " + "; ".join(f"({row.claim}) for {row.model}" for row in rows.itertuples()) + ".")
    return " ".join(lines)


def criteria() -> pd.DataFrame:
    """The criteria of every claim (`study.claims.CRITERIA`), as chapter 7 shows them before the verdicts."""
    return criteria_table()
