"""Check that every table a chapter displays holds the numbers of a result file it wrote (`lp.book.tables.save`).

Each row of a shown table must match one row of the CSV: every number in it matches a number of that row. A page
rounds (`tables.for_reading`) and the CSV keeps six significant digits, so two numbers match when both can be
roundings of one value: the intervals of half a unit of their last digit ("0.619" stands for 0.6185 to 0.6195)
overlap. A CSV value changed by more than that rounding matches nothing. A table whose cells hold no numbers (the
claims' verdicts) must have every cell's text among the values of the chapter's result files."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

from ..errors import InvalidInputError

SHOWN = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d*)?(?:[eE][-+]?\d+)?")
SAVED = re.compile(r"(?<![\w.])-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")
TAG = re.compile(r"<[^>]+>")
ROW = re.compile(r"<tr\b.*?</tr>", re.DOTALL | re.IGNORECASE)
CELL = re.compile(r"<td\b[^>]*>(.*?)</td>", re.DOTALL | re.IGNORECASE)
STYLE = re.compile(r"<(style|script)\b.*?</\1>", re.DOTALL | re.IGNORECASE)
_PARTS = re.compile(r"-?[\d,]+(?:\.(\d*))?(?:[eE]([-+]?\d+))?")


@dataclass(frozen=True)
class Number:
    """A number as written: its text, its value and half the unit of its last digit."""

    text: str
    value: float
    half_unit: float

    @classmethod
    def parse(cls, text: str) -> Number:
        parts = _PARTS.fullmatch(text)
        decimals, exponent = len(parts.group(1) or ""), int(parts.group(2) or 0)
        return cls(text, float(text.replace(",", "")), 0.5 * 10.0 ** (exponent - decimals))

    def matches(self, other: Number) -> bool:
        """True if both can be roundings of one value."""
        return abs(self.value - other.value) < self.half_unit + other.half_unit


@dataclass
class TableCheck:
    """How many displayed tables were compared, and the ones that match no result file: (chapter, the numbers
    of the table that the closest file lacks)."""

    checked: int = 0
    mismatches: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checked > 0 and not self.mismatches


def numbers(text: str, pattern: re.Pattern[str] = SHOWN) -> list[Number]:
    """Every number written in `text`."""
    return [Number.parse(match.group()) for match in pattern.finditer(text)]


def shown_rows(html: str) -> list[list[Number]]:
    """The numbers of each row of an HTML table (thousands separators allowed; styles skipped; entities such as
    &#39; read as the characters they stand for)."""
    html = STYLE.sub(" ", html)
    return [numbers(unescape(TAG.sub(" ", row))) for row in ROW.findall(html) or [html]]


def saved_cells(saved: Path) -> list[list[str]]:
    """The cells of each row of a saved CSV file, its header included."""
    return list(csv.reader(io.StringIO(saved.read_text())))


def saved_rows(cells: list[list[str]]) -> list[list[Number]]:
    """The numbers of each row of a saved CSV file (its `saved_cells`)."""
    return [[number for value in row for number in numbers(value, SAVED)] for row in cells]


def missing_from(shown: list[list[Number]], saved: list[list[Number]]) -> list[str]:
    """The numbers of a displayed table that are missing from the saved rows: for each shown row, those that the
    closest saved row lacks (none when a saved row matches them all, `Number.matches`)."""
    return [
        text
        for row in shown
        for text in min(
            ([x.text for x in row if not any(x.matches(v) for v in values)] for values in saved),
            key=len,
            default=[x.text for x in row],
        )
    ]


def shown_texts(html: str) -> list[str]:
    """The text of every non-empty data cell (headers aside) of an HTML table."""
    texts = (unescape(TAG.sub(" ", cell)) for cell in CELL.findall(STYLE.sub(" ", html)))
    return [" ".join(text.split()) for text in texts if text.strip()]


def displayed_tables(executed: Path) -> list[str]:
    """The HTML of each table shown by a cell that saves a result table (`lp.book.tables.save`)."""
    cells = json.loads(executed.read_text())["cells"]
    return [
        "".join(output["data"]["text/html"])
        for cell in cells
        if "lp.book.tables.save" in "".join(cell["source"])
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
        cells = [saved_cells(table) for table in sorted(results.glob(f"{executed.name[:2]}_*.csv"))]
        saved = [saved_rows(table) for table in cells]
        known = {" ".join(value.split()) for table in cells for row in table for value in row}
        for html in displayed_tables(executed):
            check.checked += 1
            shown, texts = shown_rows(html), shown_texts(html)
            everything = [x.text for row in shown for x in row]
            if any(numbers(text) for text in texts):
                missing = min((missing_from(shown, rows) for rows in saved), key=len, default=everything)
            else:
                missing = [text for text in texts if text not in known] or ([] if texts else ["(an empty table)"])
            if missing:
                check.mismatches.append((executed.stem, missing[:20]))
    return check
