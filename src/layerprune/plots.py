"""The book's figures, drawn from result objects (profiles, selections, lenses, healing logs, result tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .lens import LogitLens
from .similarity import DistanceProfile


def _axes(ax: Axes | None, size: tuple[float, float] = (6.0, 4.0)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure, axes = plt.subplots(figsize=size, layout="constrained")
    return figure, axes


def distance_heatmap(profile: DistanceProfile, ax: Axes | None = None, title: str | None = None) -> Figure:
    """D[n, l] with block size n up and start layer l across, as in the paper's figure; the argmin per row marked."""
    figure, ax = _axes(ax, (6.0, 4.8))
    grid = np.ma.masked_invalid(profile.mean[1:])
    image = ax.imshow(
        grid,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(-0.5, profile.num_layers + 0.5, 0.5, profile.num_layers + 0.5),
    )
    starts = [int(np.argmin(profile.curve(n))) for n in range(1, profile.num_layers)]
    ax.plot(starts, range(1, profile.num_layers), "w.", markersize=4, label=r"$\ell^*(n)$")
    ax.set(
        xlabel=r"start layer $\ell$", ylabel=r"block size $n$", title=title or f"angular distance, {profile.model_name}"
    )
    ax.legend(loc="upper right", fontsize=8)
    figure.colorbar(image, ax=ax, label=r"$d(x^{(\ell)}, x^{(\ell+n)})$")
    return figure


def distance_curves(profile: DistanceProfile, ns: Sequence[int], ax: Axes | None = None) -> Figure:
    """D[n, l] against l for a few block sizes n."""
    figure, ax = _axes(ax)
    for n in ns:
        ax.plot(profile.curve(n), marker=".", label=f"n = {n}")
    ax.set(xlabel=r"start layer $\ell$", ylabel="angular distance", title="distance across a block of n layers")
    ax.legend(fontsize=8)
    return figure


def optimal_start(selections: Mapping[str, Mapping[int, int]], num_layers: int, ax: Axes | None = None) -> Figure:
    """l*(n) (first removed layer) against n, one line per strategy: {strategy: {n: start}}."""
    figure, ax = _axes(ax)
    for strategy, starts in selections.items():
        ns = sorted(starts)
        ax.plot(ns, [starts[n] for n in ns], marker="o", markersize=3, label=strategy)
    ax.set(
        xlabel="layers removed n",
        ylabel="first removed layer",
        xlim=(0, num_layers),
        title="where the removed block starts",
    )
    ax.legend(fontsize=8)
    return figure


def logit_lens_plot(lens: LogitLens, ax: Axes | None = None) -> Figure:
    """Agreement of each layer's decoded residual with the model's final prediction, and its loss."""
    figure, ax = _axes(ax)
    ax.plot(lens.agreement, marker=".", color="C0")
    ax.set(
        xlabel=r"residual stream $x^{(\ell)}$ decoded by the final norm and head",
        ylabel="top-1 agreement with the output",
        ylim=(0, 1.02),
        title="logit lens",
    )
    twin = ax.twinx()
    twin.plot(lens.loss, marker=".", color="C1")
    twin.set_ylabel("next-token loss (nats)", color="C1")
    return figure


def training_curve(
    losses: Sequence[float], eval_points: Mapping[int, float] | None = None, ax: Axes | None = None
) -> Figure:
    """Training loss per step (and a smoothed line), with held-out loss points if given."""
    figure, ax = _axes(ax)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="C0", alpha=0.35, label="train loss")
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, color="C0", label=f"train loss, mean of {window}")
    if eval_points:
        ax.plot(list(eval_points), list(eval_points.values()), "o-", color="C3", label="held-out loss")
    ax.set(xlabel="step", ylabel="loss (nats)", title="healing")
    ax.legend(fontsize=8)
    return figure


def metric_vs_fraction(
    rows: Sequence[Mapping],
    value: str,
    ax: Axes | None = None,
    *,
    error: str | None = None,
    chance: float | None = None,
    title: str = "",
    ylabel: str | None = None,
) -> Figure:
    """`value` against the fraction of layers removed: one colour per strategy, solid before healing and dashed
    after; the unpruned model (strategy "none", fraction 0) starts every line."""
    figure, ax = _axes(ax)
    baseline = [row for row in rows if row["strategy"] == "none"]
    strategies = sorted({row["strategy"] for row in rows} - {"none"})
    for colour, strategy in enumerate(strategies):
        for healed in (False, True):
            points = sorted(
                baseline + [r for r in rows if r["strategy"] == strategy and r["healed"] == healed],
                key=lambda r: r["fraction"],
            )
            if len(points) == len(baseline):
                continue
            ax.errorbar(
                [p["fraction"] for p in points],
                [p[value] for p in points],
                yerr=[_number(p[error]) for p in points] if error else None,
                fmt="--" if healed else "-",
                marker="o",
                markersize=4,
                capsize=3,
                color=f"C{colour}",
                label=f"{strategy}, {'healed' if healed else 'not healed'}",
            )
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle=":", label=f"chance ({chance:g})")
    ax.set(xlabel="fraction of layers removed", ylabel=ylabel or value, title=title)
    ax.legend(fontsize=7)
    return figure


def _number(value: float | None) -> float:
    """A value for an error bar: a missing one (None) is NaN, which matplotlib skips."""
    return float("nan") if value is None else float(value)
