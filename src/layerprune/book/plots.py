"""The book's figures, drawn from result objects (profiles, selections, lenses, healing logs, result tables).

One style for the whole book: `style()`, called in each chapter's set-up cell, sizes figures for the text column
(`WIDTH` inches at `DPI`: about 975 px, shown in the 688 px column of a 1280 px page, so a 10 pt label reads as
11 pt there) and gives every strategy and every model one colour and marker (`strategy_look`, `model_look`).
In Jupyter it also writes each figure's PNG with a text chunk `FONT_KEY` holding its DPI and its smallest
legend or tick-label font in points (`smallest_font`): the page check (`pages.check_pages`) reads it to compute
the size that font is shown at."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy

from ..errors import InvalidInputError
from ..lens import LogitLens
from ..selection import STRATEGIES
from ..similarity import DistanceProfile
from ..study.statistics import wilson_interval

DPI = 150
WIDTH = 6.5
HEIGHT = 3.4
PANEL_HEIGHT = 2.8
DODGE_PT = 4.0  # the horizontal step between the series of one panel (`metric_vs_fraction`)
MIN_FONT_PT = 9.0  # the smallest legend or tick label a page may show, at its width (`pages.check_pages`)
FONT_KEY = "layerprune-fonts"  # the PNG text chunk of the font record: {"dpi": ..., "smallest_pt": ...}
RC: dict[str, Any] = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.figsize": (WIDTH, HEIGHT),
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10.5,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 10,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.8,
    "lines.markersize": 6,
    "errorbar.capsize": 3,
}


@dataclass(frozen=True)
class Look:
    """How one strategy or model is drawn in every figure of the book."""

    colour: str
    marker: str


UNPRUNED = Look("#000000", "o")  # the unpruned model (strategy "none"); each strategy's look is registered with it
STAGES = {"pruned": ("-", "not healed"), "quantized": (":", "quantized, no adapter"), "healed": ("--", "healed")}
MODELS = {
    "smollm2-135m": Look("#E69F00", "o"),
    "gemma3-270m": Look("#56B4E9", "s"),
    "qwen2.5-coder-1.5b": Look("#8C564B", "^"),
}
OTHER_MODELS = (Look("#9467BD", "v"), Look("#17BECF", "P"), Look("#BCBD22", "X"), Look("#E377C2", "D"))
CHANCE = {"color": "#7F7F7F", "linestyle": ":", "linewidth": 1.5}
REFERENCES = ("chance", "unpruned")
_other_models: dict[str, Look] = {}


def style() -> None:
    """Use the book's figure style (`RC`) from now on; in Jupyter, PNGs at `DPI` that record their fonts."""
    plt.rcParams.update(RC)
    shell = _jupyter()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(Figure, _png)


def _jupyter() -> Any:
    """The IPython shell, with its inline backend already set up (so that it will not later replace `_png`)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is not None and "inline" in matplotlib.get_backend(auto_select=False):
        import matplotlib_inline.backend_inline  # noqa: F401  (importing it sets up the inline backend)
    return shell


def _png(figure: Figure) -> str | None:
    """The figure as a base64 PNG at `DPI` with its font record, as Jupyter shows it (None when it is empty)."""
    from IPython.core.pylabtools import print_figure

    record = json.dumps({"dpi": DPI, "smallest_pt": smallest_font(figure)})
    return print_figure(figure, "png", base64=True, dpi=DPI, metadata={FONT_KEY: record})


def smallest_font(figure: Figure) -> float | None:
    """The smallest font size (pt) of the figure's legends and visible tick labels; None if it has neither."""
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes)]
    texts = [text for legend in legends if legend is not None for text in legend.get_texts()]
    texts += [
        label
        for ax in figure.axes
        if ax.get_visible()
        for axis in (ax.xaxis, ax.yaxis)
        for label in axis.get_majorticklabels()
        if label.get_text()
    ]
    return min((float(text.get_fontsize()) for text in texts), default=None)


def strategy_look(strategy: str, stage: str = "pruned") -> dict[str, Any]:
    """Plot keywords for a strategy ("none" is the unpruned model) at a stage: its colour and marker, a solid line
    before healing, dashed after it (dotted for the quantized base), open markers after pruning's own stage."""
    if (strategy != "none" and strategy not in STRATEGIES) or stage not in STAGES:
        raise InvalidInputError(
            f"no look for strategy {strategy!r} at stage {stage!r}; strategies: {', '.join(STRATEGIES)}; "
            f"stages: {', '.join(STAGES)}"
        )
    look = UNPRUNED if strategy == "none" else Look(STRATEGIES[strategy].colour, STRATEGIES[strategy].marker)
    face = look.colour if stage == "pruned" else "white"
    return {"color": look.colour, "marker": look.marker, "linestyle": STAGES[stage][0], "markerfacecolor": face}


def strategy_label(strategy: str) -> str:
    """A strategy's name in legends (its registered label)."""
    return STRATEGIES[strategy].legend if strategy in STRATEGIES else strategy


def model_look(name: str) -> dict[str, Any]:
    """Plot keywords for a model: fixed for the embedded models, the next of `OTHER_MODELS` for any other."""
    look = MODELS.get(name) or _other_models.setdefault(name, OTHER_MODELS[len(_other_models) % len(OTHER_MODELS)])
    return {"color": look.colour, "marker": look.marker}


def fit(figure: Figure, height: float = HEIGHT) -> Figure:
    """A figure drawn elsewhere (e.g. `speed.speedup_figure`) at the width of the text column, with its legends and
    tick labels at the book's sizes."""
    figure.set_size_inches(WIDTH, height)
    for ax in figure.axes:
        ax.tick_params(labelsize=RC["xtick.labelsize"])
        legend = ax.get_legend()
        for text in legend.get_texts() if legend is not None else ():
            text.set_fontsize(RC["legend.fontsize"])
    return figure


def panels(count: int, height: float = PANEL_HEIGHT) -> tuple[Figure, list[Axes]]:
    """A figure of `count` panels, two to a row, as wide as the text column."""
    columns = min(2, count)
    rows = math.ceil(count / columns)
    figure, grid = plt.subplots(rows, columns, figsize=(WIDTH, height * rows), layout="constrained", squeeze=False)
    axes = list(grid.flat)
    for unused in axes[count:]:
        figure.delaxes(unused)
    return figure, axes[:count]


def legend_below(figure: Figure, axes: Iterable[Axes]) -> None:
    """One legend for all panels, under them: each label once, reference lines (chance, unpruned) last."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    entries = dict(sorted(entries.items(), key=lambda entry: entry[0].startswith(REFERENCES)))
    figure.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=min(3, len(entries)))


def _axes(ax: Axes | None, size: tuple[float, float] = (WIDTH, HEIGHT)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    figure, axes = plt.subplots(figsize=size, layout="constrained")
    return figure, axes


def distance_heatmap(profile: DistanceProfile, ax: Axes | None = None, title: str | None = None) -> Figure:
    """D[n, l] with block size n up and start layer l across, as in the paper's figure; the argmin per row marked."""
    figure, ax = _axes(ax, (WIDTH, 4.2))
    grid = np.ma.masked_invalid(profile.mean[1:])
    image = ax.imshow(
        grid,
        origin="lower",
        aspect="auto",
        cmap="viridis",
        extent=(-0.5, profile.num_layers + 0.5, 0.5, profile.num_layers + 0.5),
    )
    starts = [int(np.argmin(profile.curve(n))) for n in range(1, profile.num_layers)]
    ax.plot(
        starts,
        range(1, profile.num_layers),
        "o",
        color="white",
        markeredgecolor="black",
        markersize=4,
        linestyle="none",
        label=r"$\ell^*(n)$",
    )
    ax.set(
        xlabel=r"start layer $\ell$", ylabel=r"block size $n$", title=title or f"angular distance, {profile.model_name}"
    )
    ax.grid(False)
    ax.legend(loc="upper right")
    figure.colorbar(image, ax=ax, label=r"$d(x^{(\ell)}, x^{(\ell+n)})$")
    return figure


def distance_heatmaps(profiles: Mapping[str, DistanceProfile]) -> Figure:
    """One `distance_heatmap` per profile, titled by its key, two to a row."""
    figure, axes = panels(len(profiles), height=3.2)
    for ax, (title, profile) in zip(axes, profiles.items(), strict=True):
        distance_heatmap(profile, ax=ax, title=title)
    return figure


def distance_curves(profile: DistanceProfile, ns: Sequence[int], ax: Axes | None = None) -> Figure:
    """D[n, l] against l for a few block sizes n, darker for larger n."""
    figure, ax = _axes(ax)
    shades = plt.get_cmap("viridis")(np.linspace(0.85, 0.0, len(ns)))
    for n, shade in zip(ns, shades, strict=True):
        ax.plot(profile.curve(n), marker=".", color=shade, label=f"n = {n}")
    ax.set(xlabel=r"start layer $\ell$", ylabel="angular distance", title="distance across a block of n layers")
    ax.legend()
    return figure


def final_state_distances(lens: LogitLens, ax: Axes | None = None) -> Figure:
    """The distance from each x^(l) to the final state taken before the final norm (the paper's) and after it."""
    figure, ax = _axes(ax)
    ax.plot(
        lens.to_final_prenorm,
        marker="o",
        color="#000000",
        zorder=3,
        label=r"to $x^{(L)}$ before the final norm (the paper)",
    )
    ax.plot(
        lens.to_final_postnorm,
        marker="s",
        color="#7F7F7F",
        linestyle="--",
        label="to the last output_hidden_states entry (after the norm)",
    )
    ax.set(xlabel=r"layer $\ell$", ylabel=r"angular distance from $x^{(\ell)}$", ylim=(0, None))
    ax.legend()
    return figure


def optimal_start(selections: Mapping[str, Mapping[int, int]], num_layers: int, ax: Axes | None = None) -> Figure:
    """l*(n) (first removed layer) against n, one line per strategy: {strategy: {n: start}}."""
    figure, ax = _axes(ax)
    for strategy, starts in selections.items():
        ns = sorted(starts)
        ax.plot(ns, [starts[n] for n in ns], markersize=4, label=strategy_label(strategy), **strategy_look(strategy))
    ax.set(
        xlabel="layers removed n",
        ylabel="first removed layer",
        xlim=(0, num_layers),
        title="where the removed block starts",
    )
    ax.legend()
    return figure


def logit_lens_plot(lens: LogitLens, ax: Axes | None = None) -> Figure:
    """Agreement of each layer's decoded residual with the model's final prediction, and its loss."""
    figure, ax = _axes(ax)
    ax.plot(lens.agreement, marker="o", color="#000000")
    ax.set(
        xlabel=r"residual stream $x^{(\ell)}$ decoded by the final norm and head",
        ylabel="top-1 agreement with the output",
        ylim=(0, 1.02),
        title="logit lens",
    )
    twin = ax.twinx()
    twin.plot(lens.loss, marker="s", linestyle="--", color="#117733")
    twin.set_ylabel("next-token loss (nats)", color="#117733")
    twin.grid(False)
    twin.spines["right"].set_visible(True)
    return figure


def training_curve(
    losses: Sequence[float], eval_points: Mapping[int, float] | None = None, ax: Axes | None = None
) -> Figure:
    """Training loss per step (and a smoothed line), with held-out loss points if given."""
    figure, ax = _axes(ax)
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="#000000", alpha=0.3, label="train loss")
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, color="#000000", label=f"train loss, mean of {window}")
    if eval_points:
        ax.plot(list(eval_points), list(eval_points.values()), "o-", color="#D55E00", label="held-out loss")
    ax.set(xlabel="step", ylabel="loss (nats)", title="healing")
    ax.legend()
    return figure


def rank_sweep(ranks: Sequence[int], losses: Sequence[float], ax: Axes | None = None) -> Figure:
    """Held-out loss after healing against the LoRA rank."""
    figure, ax = _axes(ax)
    ax.plot(ranks, losses, marker="o", color="#000000")
    ax.set(xscale="log", xlabel="LoRA rank", ylabel="held-out loss (nats)", title="rank sweep")
    return figure


def metric_vs_fraction(
    rows: Sequence[Mapping],
    value: str,
    ax: Axes | None = None,
    *,
    wilson: bool = False,
    chance: float | None = None,
    unpruned: float | None = None,
    title: str = "",
    ylabel: str | None = None,
    legend: bool = True,
) -> Figure:
    """`value` against the fraction of layers removed: one colour and marker per strategy (`strategy_look`), solid
    before healing and dashed after; the unpruned model (strategy "none", fraction 0) starts every line, and a
    series of one point is a marker alone. Rows without a "stage" are not healed. The x axis is the fraction
    actually removed (n / L, column "fraction removed", where the rows have it). With `wilson`, `value` is an
    accuracy over "`value` n" questions and the error bars are its 95% Wilson interval (`wilson_bars`), the
    interval the book's tables and ledger give; `chance` draws the chance level and `unpruned` the unpruned
    model's value as dotted lines. Each series is set `DODGE_PT` points apart from the next,
    horizontally, so that points at the same fraction do not hide one another."""
    figure, ax = _axes(ax)
    baseline = [row for row in rows if row["strategy"] == "none"]
    strategies = [s for s in dict.fromkeys(row["strategy"] for row in rows) if s != "none"]
    series = [
        (strategy, stage, own)
        for strategy in strategies
        for stage in STAGES
        if (own := [r for r in rows if r["strategy"] == strategy and r.get("stage", "pruned") == stage])
    ]
    for index, (strategy, stage, own) in enumerate(series):
        look = strategy_look(strategy, stage)
        shift = (index - (len(series) - 1) / 2) * DODGE_PT
        look["transform"] = offset_copy(ax.transData, fig=figure, x=shift, units="points")
        if len(own) == 1:  # one point: a line from the unpruned model would draw values nobody measured
            points, look = own, look | {"linestyle": "none"}
        else:
            points = sorted(baseline + own, key=_removed)
        x, y = [_removed(p) for p in points], [p[value] for p in points]
        spread = wilson_bars(points, value) if wilson else None
        ax.errorbar(x, y, yerr=spread, label=f"{strategy_label(strategy)}, {STAGES[stage][1]}", **look)
        below, above = spread if spread is not None else (0, 0)
        low, high = np.subtract(y, below), np.add(y, above)  # the shifted lines do not scale the axes
        ax.update_datalim(np.column_stack([x + x, np.concatenate([low, high])]))
    ax.autoscale_view()
    if unpruned is not None:
        ax.axhline(unpruned, color="#000000", linestyle=":", linewidth=1.5, label=f"unpruned ({unpruned:.3g})")
    if chance is not None:
        ax.axhline(chance, label="chance", **CHANCE)
    ax.set(xlabel="fraction of layers removed", ylabel=ylabel or value, title=title)
    if legend:
        ax.legend()
    return figure


def accuracy_vs_fraction(rows: Sequence[Mapping], tasks: Sequence[str], chance: Mapping[str, float]) -> Figure:
    """One `metric_vs_fraction` panel per task (accuracy, 95% Wilson intervals, chance), one legend under them."""
    figure, axes = panels(len(tasks))
    for ax, task in zip(axes, tasks, strict=True):
        look = {"chance": chance[task], "title": task, "ylabel": "accuracy", "legend": False}
        metric_vs_fraction(rows, task, ax, wilson=True, **look)
    legend_below(figure, axes)
    return figure


def across_models(rows: Sequence[Mapping], tasks: Sequence[str], chance: Mapping[str, float]) -> Figure:
    """Normalised held-out loss and each task's accuracy (standard errors, chance) against the fraction of layers
    removed (n / L), one colour and marker per model (`model_look`), 95% Wilson intervals (`wilson_bars`), one
    legend under the panels."""
    figure, axes = panels(1 + len(tasks))
    names = list(dict.fromkeys(row["model"] for row in rows))
    for name in names:
        points = sorted((row for row in rows if row["model"] == name), key=_removed)
        fractions = [_removed(p) for p in points]
        axes[0].plot(fractions, [p["normalized loss"] for p in points], label=name, **model_look(name))
        for ax, task in zip(axes[1:], tasks, strict=True):
            errors = wilson_bars(points, task)
            ax.errorbar(fractions, [p[task] for p in points], yerr=errors, label=name, **model_look(name))
    axes[0].set(xlabel="fraction of layers removed", ylabel=r"loss / $\log V$", title="normalised held-out loss")
    for ax, task in zip(axes[1:], tasks, strict=True):
        ax.axhline(chance[task], label="chance", **CHANCE)
        ax.set(xlabel="fraction of layers removed", ylabel="accuracy", title=task)
    legend_below(figure, axes)
    return figure


def relative_cost(rows: Sequence[Mapping], ax: Axes | None = None) -> Figure:
    """Parameters and forward time of each pruned model relative to the unpruned one (the first row)."""
    figure, ax = _axes(ax)
    fractions = [row["fraction"] for row in rows]
    parameters = [row["parameters"] / rows[0]["parameters"] for row in rows]
    times = [rows[0]["tokens per second"] / row["tokens per second"] for row in rows]
    ax.plot(fractions, parameters, marker="o", color="#000000", label="parameters")
    ax.plot(fractions, times, marker="s", linestyle="--", color="#0072B2", label="forward time")
    ax.set(xlabel="fraction of layers removed", ylabel="relative to the unpruned model")
    ax.legend()
    return figure


def wilson_bars(points: Sequence[Mapping], task: str) -> np.ndarray:
    """Error bars (below, above each point) of the 95% Wilson interval of each point's accuracy on `task` over its
    "`task` n" questions; NaN (no bar) where a point has no count."""
    bars = []
    for point in points:
        value, count = _number(point.get(task)), _number(point.get(f"{task} n"))
        if math.isnan(value) or math.isnan(count) or count <= 0:
            bars.append((math.nan, math.nan))
            continue
        low, high = wilson_interval(value * count, int(count))
        bars.append((value - low, high - value))
    return np.array(bars, dtype=float).T


def _removed(row: Mapping) -> float:
    """The fraction of layers a row actually removed (n / L), else its nominal fraction."""
    removed = row.get("fraction removed")
    return row["fraction"] if removed is None or (isinstance(removed, float) and math.isnan(removed)) else removed


def _number(value: float | None) -> float:
    """A value for an error bar: a missing one (None) is NaN, which matplotlib skips."""
    return float("nan") if value is None else float(value)
