"""The book's tables, built from result objects, saved next to the figures as CSV (atomically) and shown for
reading (`for_reading`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from ..cache import atomic_file
from ..lens import LogitLens
from ..selection import block_for_fraction, layers_for_fraction
from ..similarity import DistanceProfile

HEADERS = {"loss": "loss (nats)", "final train loss": "final train loss (nats)"}
STDERR = " stderr"
MISSING = "–"
_LAYER_LIST = re.compile(r"[\d ]*")
_NUMBER_CELL = "text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums"


def save(table: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write `table` to CSV atomically and return it, so a notebook shows exactly what it saved."""
    with atomic_file(Path(path)) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def for_reading(table: pd.DataFrame, headers: Mapping[str, str] | None = None) -> Styler:
    """`table` as a page shows it (its CSV keeps every digit): no index; numbers to three significant digits, or to
    the precision of their standard error (columns "X" and "X stderr" become one "X ± stderr"); integers with
    thousands separators; lists of layers as ranges ("11-18"); units in the headers (`HEADERS`, updated by
    `headers`). Numbers are right-aligned and kept on one line."""
    names = HEADERS | dict(headers or {})
    shown: dict[str, list[str]] = {}
    numeric: list[bool] = []
    for column in table.columns:
        name = str(column)
        if name.endswith(STDERR) and name.removesuffix(STDERR) in table.columns:
            continue
        header = names.get(name, name)
        if f"{name}{STDERR}" in table.columns:
            errors = table[f"{name}{STDERR}"]
            shown[f"{header} ± stderr"] = [_with_error(v, e) for v, e in zip(table[column], errors, strict=True)]
        else:
            layers = name == "layers" or name.endswith(" layers")
            shown[header] = [_cell(value, layers) for value in table[column]]
        numeric.append(_is_number(table[column]))
    styles = [
        {"selector": selector, "props": props}
        for i, is_number in enumerate(numeric)
        if is_number
        for selector, props in ((f"th.col{i}", "text-align: right"), (f"td.col{i}", _NUMBER_CELL))
    ]
    return (
        pd.DataFrame(shown)
        .style.hide(axis="index")
        .format(escape="html")
        .set_table_attributes('class="layerprune-table"')
        .set_table_styles(styles)
    )


def _is_number(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float | np.floating) and math.isnan(value))


def _cell(value: Any, layers: bool = False) -> str:
    """One value as shown: layer lists (or, in a layers column, space-separated layers) as ranges, missing as a
    dash, booleans as yes/no, integers with separators, floats by `_number`."""
    if isinstance(value, list | tuple | np.ndarray):
        return _span([int(v) for v in value]) if len(value) else MISSING
    if layers and isinstance(value, str) and _LAYER_LIST.fullmatch(value):
        return _span([int(v) for v in value.split()]) if value.strip() else MISSING
    if _missing(value):
        return MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    if isinstance(value, float | np.floating):
        return _number(float(value))
    return str(value)


def _number(value: float) -> str:
    """Three significant digits: "0.619", "3.59", "882"; whole numbers from 1,000 up ("2,520"); scientific notation
    below 0.01 ("9.08e-04"), so no number shows more than four decimals."""
    if value == 0 or not math.isfinite(value):
        return MISSING if math.isnan(value) else f"{value:g}"
    rounded = float(f"{value:.3g}")
    if abs(rounded) >= 1000:
        return f"{value:,.0f}"
    if abs(rounded) < 0.01:
        return f"{value:.2e}"
    return f"{value:.3g}"


def _with_error(value: Any, error: Any) -> str:
    """ "value ± error" with the error to two significant digits and the value to the same decimals (at most
    four); the value alone by `_number` when there is no error."""
    if _missing(value):
        return MISSING
    if _missing(error) or float(error) <= 0:
        return _number(float(value))
    decimals = min(4, max(0, 1 - math.floor(math.log10(float(error)))))
    return f"{float(value):,.{decimals}f} ± {float(error):,.{decimals}f}"


def profile_summary(profile: DistanceProfile) -> pd.DataFrame:
    """One row: the profile's size and the range of D over all valid (n, l)."""
    valid = profile.mean[1:][np.isfinite(profile.mean[1:])]
    return pd.DataFrame(
        [
            {
                "model": profile.model_name,
                "layers": profile.num_layers,
                "sequences": profile.num_sequences,
                "token": profile.token,
                "metric": profile.metric,
                "D min": valid.min(),
                "D max": valid.max(),
            }
        ]
    )


def selection_table(
    profile: DistanceProfile,
    fractions: Iterable[float],
    strategies: Sequence[str] = ("similarity", "last"),
    seed: int = 0,
) -> pd.DataFrame:
    """For each fraction: n, and per strategy the removed layers and D at that block."""
    rows = []
    for fraction in fractions:
        row: dict = {"fraction": fraction, "n": layers_for_fraction(profile.num_layers, fraction)}
        for strategy in strategies:
            chosen = block_for_fraction(profile, fraction, strategy, seed=seed)
            row[f"{strategy} layers"] = _span(chosen.layers)
            row[f"{strategy} D"] = chosen.distance
        rows.append(row)
    return pd.DataFrame(rows)


def _span(layers: Sequence[int]) -> str:
    """Layers as ranges: "11-18" for a contiguous run, runs joined by ", " ("3-5, 9")."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def lens_table(lens: LogitLens) -> pd.DataFrame:
    """Per residual-stream position: logit-lens agreement and loss, and distances to the final state."""
    return pd.DataFrame(
        {
            "layer": range(len(lens.agreement)),
            "agreement": lens.agreement,
            "loss": lens.loss,
            "to final (pre-norm)": lens.to_final_prenorm,
            "to final (post-norm)": lens.to_final_postnorm,
        }
    )
