"""A benchmark's report: its measured rows, the machine, and each ratio against its goal; cacheable by machine."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..cache import cacheable as store_cacheable
from ..cache import decode_records, encode_records


@dataclass(frozen=True)
class Check:
    """A measured value against its goal."""

    measure: str
    value: float
    target: float
    higher_is_better: bool

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        goal = f"{'>=' if self.higher_is_better else '<='} {self.target:g}"
        return {"measure": self.measure, "value": _significant(self.value), "goal": goal, "met": self.met}


@dataclass
class Report:
    """A titled table of measurements (one dict per row) and the goals they are held to."""

    title: str
    rows: list[dict[str, Any]]
    checks: list[Check] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """The rows, floats rounded to 4 significant digits (so a saved CSV shows what the page shows)."""
        return pd.DataFrame(self.rows).map(_significant)

    def goals(self) -> pd.DataFrame:
        return pd.DataFrame([check.as_dict() for check in self.checks], columns=["measure", "value", "goal", "met"])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (`from_dict` is the inverse)."""
        rows = encode_records([{key: _plain(value) for key, value in row.items()} for row in self.rows])
        return {"title": self.title, "rows": rows, "checks": [dataclasses.asdict(check) for check in self.checks]}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> Report:
        return cls(payload["title"], decode_records(payload["rows"]), [Check(**check) for check in payload["checks"]])

    def text(self) -> str:
        """The report as plain text, for the bench scripts."""
        parts = [f"== {self.title}", self.table().to_string(index=False)]
        if self.checks:
            parts += ["-- goals", self.goals().to_string(index=False)]
        return "\n".join(parts) + "\n"


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (for JSON)."""
    return value.item() if isinstance(value, np.generic) else value


def cacheable(kind: str) -> Callable[[Callable[..., Report]], Callable[..., Report]]:
    """A benchmark's report cached like every other result (`layerprune.cache.cacheable`), as a timing: keyed by
    every argument and this machine, under the kind "bench-<kind>"."""
    return store_cacheable(f"bench-{kind}", encode=Report.to_dict, decode=Report.from_dict, timing=True)


def _significant(value: Any, digits: int = 4) -> Any:
    if isinstance(value, float | np.floating) and math.isfinite(value) and value != 0:
        return round(float(value), digits - 1 - math.floor(math.log10(abs(value))))
    return value
