"""Check that every table a chapter displays holds the numbers of a result file it wrote (`lp.tables.save`)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .errors import InvalidInputError

NUMBER = re.compile(r"-?\d+\.?\d*(?:[eE][-+]?\d+)?")
TAG = re.compile(r"<[^>]+>")


@dataclass
class TableCheck:
    """How many displayed tables were compared, and the ones that match no result file (chapter, first numbers)."""

    checked: int = 0
    mismatches: list[tuple[str, list[float]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.mismatches


def numbers(text: str) -> list[float]:
    """Every number written in `text`."""
    return [float(x) for x in NUMBER.findall(text)]


def saved_numbers(saved: Path) -> list[float]:
    """The numbers of a saved CSV file and its row labels (0, 1, ... as a displayed DataFrame shows them)."""
    return numbers(saved.read_text()) + [float(i) for i in range(len(pd.read_csv(saved)))]


def shown_in(shown: list[float], values: list[float]) -> bool:
    """True if every number of a displayed table is one of `values` (within float rounding)."""
    return all(any(abs(x - v) <= 1e-5 * max(1.0, abs(v)) for v in values) for x in shown)


def displayed_tables(executed: Path) -> list[list[float]]:
    """The numbers of each HTML table shown by a cell that saves a result table (`lp.tables.save`)."""
    cells = json.loads(executed.read_text())["cells"]
    return [
        numbers(TAG.sub(" ", "".join(output["data"]["text/html"])))
        for cell in cells
        if "lp.tables.save" in "".join(cell["source"])
        for output in cell.get("outputs", [])
        if "text/html" in output.get("data", {})
    ]


def check_tables(generated: str | Path, results: str | Path) -> TableCheck:
    """Compare the tables of every executed chapter in `generated` (NN_name.ipynb) with the CSV files of the same
    chapter number in `results` (NN_*.csv)."""
    generated, results = Path(generated), Path(results)
    chapters = sorted(generated.glob("[0-9][0-9]_*.ipynb"))
    if not chapters or not results.is_dir():
        raise InvalidInputError(f"no executed chapters in {generated} or no result directory {results}")
    check = TableCheck()
    for executed in chapters:
        saved = [saved_numbers(table) for table in sorted(results.glob(f"{executed.name[:2]}_*.csv"))]
        for shown in displayed_tables(executed):
            check.checked += 1
            if not shown or not any(shown_in(shown, values) for values in saved):
                check.mismatches.append((executed.stem, shown[:20]))
    return check
