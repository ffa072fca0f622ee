"""The book's tables, built from result objects and saved next to the figures as CSV (atomically)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .cache import atomic_file
from .lens import LogitLens
from .selection import layers_for_fraction, select_block
from .similarity import DistanceProfile


def save(table: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write `table` to CSV atomically and return it, so a notebook shows exactly what it saved."""
    with atomic_file(Path(path)) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


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
        n = layers_for_fraction(profile.num_layers, fraction)
        row: dict = {"fraction": fraction, "n": n}
        for strategy in strategies:
            chosen = select_block(profile, n, strategy, seed=seed)
            row[f"{strategy} layers"] = _span(chosen.layers)
            row[f"{strategy} D"] = chosen.distance
        rows.append(row)
    return pd.DataFrame(rows)


def _span(layers: Sequence[int]) -> str:
    """'a-b' for a contiguous run, else the comma-separated list."""
    if list(layers) == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])
    return ",".join(map(str, layers))


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
