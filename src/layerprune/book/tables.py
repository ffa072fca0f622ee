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
from ..selection import block_for_fraction, layers_for_fraction, ranking_profile
from ..similarity import DistanceProfile
from ..study import files

HEADERS = {"loss": "loss (nats)", "final train loss": "final train loss (nats)"}
STDERR = " stderr"
LAYER_COLUMNS = ("layers", "removed")  # and any "... layers": space-separated layers there are shown as ranges
MISSING = "–"
MAX_DECIMALS = 4
_LAYER_LIST = re.compile(r"[\d ]*")
_NUMBER = ("text-align: right", "text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums")
_TEXT = ("text-align: left", "text-align: left; white-space: pre-wrap")


def save(table: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write `table` to CSV atomically and return it, so a notebook shows exactly what it saved."""
    with atomic_file(Path(path)) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def for_reading(table: pd.DataFrame, headers: Mapping[str, str] | None = None) -> Styler:
    """`table` as a page shows it (its CSV keeps every digit, and the per-block losses the page leaves out): no
    index; floats to three significant digits (`_number`), or a value with a standard error to the error's
    precision (columns "X" and "X stderr" become one "X ± stderr"); integers with thousands separators; layers as
    ranges ("11-18": lists, and space-separated layers in `LAYER_COLUMNS`); units in the headers (`HEADERS`,
    updated by `headers`). Numbers are right-aligned and kept on one line; text is left-aligned, its line breaks
    kept."""
    names = HEADERS | dict(headers or {})
    shown: dict[str, list[str]] = {}
    numeric: list[bool] = []
    for column in table.columns:
        name = str(column)
        if name == files.BLOCK_LOSSES:  # kept for the ledger's intervals, not for reading
            continue
        if name.endswith(STDERR) and name.removesuffix(STDERR) in table.columns:
            continue
        header = names.get(name, name)
        if f"{name}{STDERR}" in table.columns:
            pairs = zip(table[column], table[f"{name}{STDERR}"], strict=True)
            shown[f"{header} ± stderr"] = [_with_error(value, error) for value, error in pairs]
        else:
            layers = name in LAYER_COLUMNS or name.endswith(" layers")
            shown[header] = [_cell(value, layers) for value in table[column]]
        numeric.append(_is_number(table[column]))
    styles = [
        {"selector": f"{cell}.col{i}", "props": props}
        for i, is_number in enumerate(numeric)
        for cell, props in zip(("th", "td"), _NUMBER if is_number else _TEXT, strict=True)
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


def _short(value: float) -> int | None:
    """The decimals a short decimal (at most three, like 0.125 or 22890.0) is written with; None for others."""
    return next((places for places in range(4) if round(value, places) == value), None)


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
    """Three significant digits, trailing zeros kept ("0.619", "1.00", "882"); a short decimal as written ("0.25",
    "1.836"); whole numbers from 1,000 up ("2,520"); scientific notation below 0.01 ("9.08e-04"). So no number
    shows more than four decimals."""
    if math.isnan(value):
        return MISSING
    places = _short(value) if math.isfinite(value) else 0
    if places is not None:
        return f"{value:,.{places}f}" if math.isfinite(value) else f"{value:g}"
    if abs(float(f"{value:.3g}")) >= 1000:
        return f"{value:,.0f}"
    if abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:#.3g}".rstrip(".")


def _with_error(value: Any, error: Any) -> str:
    """ "value ± error" with the error to two significant digits and the value to the same decimals (an error
    below 0.0001 in scientific notation); the value alone by `_number` when there is no error."""
    if _missing(value):
        return MISSING
    if _missing(error) or float(error) <= 0:
        return _number(float(value))
    places = max(0, 1 - math.floor(math.log10(float(error))))
    if places > MAX_DECIMALS:
        return f"{_number(float(value))} ± {float(error):.1e}"
    return f"{float(value):,.{places}f} ± {float(error):,.{places}f}"


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
    influence_profile: DistanceProfile | None = None,
) -> pd.DataFrame:
    """For each fraction and strategy: n, the removed layers and D at that block (one row each); a strategy that
    ranks by influence ("block_influence") reads `influence_profile` when given (`study.steps.shortgpt_profile`)."""
    rows = []
    for fraction in fractions:
        n = layers_for_fraction(profile.num_layers, fraction)
        for strategy in strategies:
            source = ranking_profile(strategy, profile, influence_profile)
            chosen = block_for_fraction(source, fraction, strategy, seed=seed)
            rows.append(
                {
                    "fraction": fraction,
                    "n": n,
                    "strategy": strategy,
                    "layers": _span(chosen.layers),
                    "D": chosen.distance,
                }
            )
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
