"""The book's figure style: sizes and fonts for the text column, one look per strategy and model, and the font
record each PNG carries for the page check."""

import base64
import io
import json

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from layerprune.book import plots
from layerprune.errors import InvalidInputError
from layerprune.lens import LogitLens
from layerprune.similarity import DistanceProfile

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def book_style():
    with plt.rc_context():
        plots.style()
        yield
    plt.close("all")


def profile(layers: int = 6) -> DistanceProfile:
    mean = np.full((layers + 1, layers + 1), np.nan)
    for n in range(layers + 1):
        mean[n, : layers - n + 1] = np.linspace(0.1, 0.3, layers - n + 1) + 0.05 * n
    return DistanceProfile(mean, mean * 0, 4, layers, "x", "tiny", "last", "angular")


LENS = LogitLens([0.1, 0.5, 0.9], [5.0, 3.0, 2.0], [0.5, 0.3, 0.0], [0.6, 0.4, 0.2], 10)
ROWS = [
    {"model": "smollm2-135m", "fraction": 0.0, "strategy": "none", "stage": "pruned", "normalized loss": 0.3,
     "arc_easy": 0.6, "arc_easy n": 100, "mmlu": 0.3, "mmlu n": None},
    {"model": "smollm2-135m", "fraction": 0.25, "strategy": "similarity", "stage": "pruned", "normalized loss": 0.4,
     "arc_easy": 0.5, "arc_easy n": 100, "mmlu": 0.25, "mmlu n": 120},
    {"model": "smollm2-135m", "fraction": 0.25, "strategy": "similarity", "stage": "healed", "normalized loss": 0.35,
     "arc_easy": 0.55, "arc_easy n": 100, "mmlu": 0.26, "mmlu n": 120},
    {"model": "smollm2-135m", "fraction": 0.25, "strategy": "last", "stage": "pruned", "normalized loss": 0.5,
     "arc_easy": 0.4, "arc_easy n": 100, "mmlu": 0.24, "mmlu n": 120},
]  # fmt: skip
FIGURES = {
    "heatmap": lambda: plots.distance_heatmap(profile()),
    "heatmaps": lambda: plots.distance_heatmaps({"prose": profile(), "QA": profile(4)}),
    "curves": lambda: plots.distance_curves(profile(), [1, 2, 3]),
    "final state": lambda: plots.final_state_distances(LENS),
    "optimal start": lambda: plots.optimal_start({"similarity": {1: 2, 2: 1}, "last": {1: 4, 2: 3}}, 6),
    "logit lens": lambda: plots.logit_lens_plot(LENS),
    "training": lambda: plots.training_curve([3.0, 2.5, 2.2, 2.0], {2: 2.6, 4: 2.1}),
    "rank sweep": lambda: plots.rank_sweep([2, 8, 32], [2.3, 2.2, 2.25]),
    "loss": lambda: plots.metric_vs_fraction(ROWS, "normalized loss", unpruned=0.3),
    "accuracy": lambda: plots.accuracy_vs_fraction(ROWS, ["arc_easy", "mmlu"], {"arc_easy": 0.25, "mmlu": 0.25}),
    "models": lambda: plots.across_models(ROWS, ["arc_easy"], {"arc_easy": 0.25}),
    "cost": lambda: plots.relative_cost(
        [
            {"fraction": 0.0, "parameters": 100, "tokens per second": 10.0},
            {"fraction": 0.5, "parameters": 60, "tokens per second": 17.0},
        ]
    ),
}


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_as_wide_as_the_column_with_readable_fonts(name):
    figure = FIGURES[name]()
    assert figure.get_figwidth() == plots.WIDTH
    assert plots.smallest_font(figure) >= 10


def test_a_strategy_and_a_model_look_the_same_everywhere():
    figure = plots.accuracy_vs_fraction(ROWS, ["arc_easy", "mmlu"], {"arc_easy": 0.25, "mmlu": 0.25})
    colours = {bars.get_label(): bars.lines[0].get_color() for ax in figure.axes for bars in ax.containers}
    assert colours["similarity, not healed"] == colours["similarity, healed"] == plots.STRATEGIES["similarity"].colour
    assert plots.strategy_look("similarity", "healed")["linestyle"] == "--"
    assert plots.model_look("gemma3-270m") == plots.model_look("gemma3-270m")
    assert plots.model_look("my-model")["color"] == plots.model_look("my-model")["color"]
    assert plots.model_look("my-model")["color"] not in {look.colour for look in plots.MODELS.values()}
    with pytest.raises(InvalidInputError, match="no look for strategy 'magic'"):
        plots.strategy_look("magic")


def test_fit_brings_a_figure_drawn_elsewhere_to_the_book_sizes():
    figure, ax = plt.subplots(figsize=(10, 3.8))
    ax.plot([0, 1], [1, 2], label="measured")
    ax.legend(fontsize=7)
    assert plots.smallest_font(figure) == 7
    plots.fit(figure)
    assert figure.get_figwidth() == plots.WIDTH and plots.smallest_font(figure) == 10


def test_in_jupyter_every_png_records_its_dpi_and_smallest_font():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        plots.style()
        figure, ax = plt.subplots()
        ax.plot([0, 1], [1, 2], label="a line")
        ax.legend(fontsize=8)
        data, _ = shell.display_formatter.format(figure)
    finally:
        InteractiveShell.clear_instance()
    image = Image.open(io.BytesIO(base64.b64decode(data["image/png"])))
    assert json.loads(image.text[plots.FONT_KEY]) == {"dpi": plots.DPI, "smallest_pt": 8.0}
    assert image.width > 0.9 * plots.WIDTH * plots.DPI


def test_a_series_of_one_point_is_a_marker_without_a_line():
    """ROWS has one pruned point per strategy: drawn alone, not joined to the unpruned model's point."""
    figure = plots.metric_vs_fraction(ROWS, "arc_easy")
    lines = {bars.get_label(): bars.lines[0] for bars in figure.axes[0].containers}
    single = lines["last, not healed"]
    assert list(single.get_xdata()) == [0.25] and single.get_linestyle() == "None"
    two = [*ROWS, {**ROWS[3], "fraction": 0.5}]
    joined = {b.get_label(): b.lines[0] for b in plots.metric_vs_fraction(two, "arc_easy").axes[0].containers}
    assert list(joined["last, not healed"].get_xdata()) == [0.0, 0.25, 0.5]
    assert joined["last, not healed"].get_linestyle() == "-"


def test_accuracy_bars_are_the_wilson_intervals():
    """The error bars of an accuracy are its 95% Wilson interval, the interval of the tables and the ledger."""
    from layerprune.study.statistics import wilson_interval

    figure = plots.metric_vs_fraction(ROWS, "arc_easy", wilson=True)
    bars = {b.get_label(): b for b in figure.axes[0].containers}
    segments = bars["last, not healed"].lines[2][0].get_segments()
    low, high = wilson_interval(40, 100)
    assert segments[0][0][1] == pytest.approx(low) and segments[0][1][1] == pytest.approx(high)
    assert np.isnan(plots.wilson_bars([ROWS[0]], "mmlu")).all()  # no count: no bar
