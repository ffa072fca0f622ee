"""The pages as readers see them: the chapter notebooks' conventions (code lines that fit the column, folded
set-up code) and the page checks of `layerprune check-book`, on a small site with one page of each kind."""

import json
import shutil
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pytest

from layerprune.book import plots
from layerprune.book.pages import machine_paths

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CODE_LINE = 88


def code_cells(notebook: Path) -> list[dict]:
    return [cell for cell in json.loads(notebook.read_text())["cells"] if cell["cell_type"] == "code"]


def tags(cell: dict) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_code_line_a_page_shows_fits_the_column(notebook):
    """Parameters cells are removed from the page (the provenance table shows their values)."""
    shown = [c for c in code_cells(notebook) if not tags(c) & {"parameters", "remove-cell", "remove-input"}]
    long = [line for c in shown for line in "".join(c["source"]).splitlines() if len(line) > CODE_LINE]
    assert not long, f"{notebook.name}: code lines over {CODE_LINE} characters: {long}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_set_up_code_is_folded_and_provenance_shows_only_its_box(notebook):
    """(A figure drawn without `lp.book.plots.style()` in the set-up cell fails the page check.)"""
    cells = code_cells(notebook)
    set_up = next(c for c in cells if "provenance.show_parameters()" in "".join(c["source"]))
    assert "hide-input" in tags(set_up)
    closing = [c for c in cells if "".join(c["source"]).strip() == "provenance.show()"]
    assert closing and all("remove-input" in tags(c) for c in closing)


def test_the_paths_no_page_may_show_are_the_book_root_and_home(tmp_path):
    html = tmp_path / "book" / "_build" / "html"
    assert machine_paths(html) == sorted({str(tmp_path / "book"), str(Path.home().resolve())})


def figure_png(path: Path, legend_pt: float) -> None:
    """A PNG as the book writes it: WIDTH inches at DPI, with its font record."""
    with plt.rc_context(plots.RC):
        figure, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label="a line")
        ax.legend(fontsize=legend_pt)
        record = json.dumps({"dpi": plots.DPI, "smallest_pt": plots.smallest_font(figure)})
        figure.savefig(path, dpi=plots.DPI, metadata={plots.FONT_KEY: record})
        plt.close(figure)


def strip_record(path: Path) -> None:
    """The PNG re-saved without its text chunks, as a figure drawn before `plots.style()` would be."""
    from PIL import Image

    Image.open(path).save(path)


PAGE = """<!DOCTYPE html><html><head><style>body {{ margin: 0 }} article {{ width: 688px; margin: 0 auto }}
img {{ max-width: 100% }} @media (max-width: 700px) {{ article {{ width: 350px }} }}</style></head>
<body><article>{}</article></body></html>"""


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    pytest.importorskip("playwright")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from layerprune.book.pages import check_pages

    root = tmp_path_factory.mktemp("site")
    html = root / "_build" / "html"
    (html / "_images").mkdir(parents=True)
    figure_png(html / "_images" / "good.png", 10)
    figure_png(html / "_images" / "small.png", 5)
    shutil.copy(html / "_images" / "good.png", html / "_images" / "bare.png")
    strip_record(html / "_images" / "bare.png")
    good = PAGE.format(
        "<div class='cell_input'><pre>x = 1  # costs $5, or $D$ in TeX</pre></div>"
        "<p>Prices: 5 dollars ($) and <code>$\\ell$</code> in code.</p>"
        "<table><tr><td>0.123</td><td>1.23e-05</td><td>134,515,008</td></tr></table>"
        "<div class='cell_output'><img src='_images/good.png'></div>"
    )
    bad = PAGE.format(
        f"<div class='cell_input'><pre>{'y = 1 + ' * 30}</pre></div>"
        "<table><tr><td>0.123456</td></tr></table>"
        f"<p>saved to {root}/results/x.csv</p>"
        "<p>The block starts at $\\ell^*(n)$ = 13, and <em>\\frac</em> too.</p>"
        "<div class='cell_output'><img src='_images/small.png' style='width: 40%'></div>"
        "<div class='cell_output'><img src='_images/bare.png'></div>"
    )
    (html / "good.html").write_text(good)
    (html / "bad.html").write_text(bad)
    return {r.page: r for r in check_pages(html, screenshots=root / "shots")}, root


def test_a_page_that_reads_well_passes(checked):
    reports, root = checked
    assert reports["good.html"].ok, reports["good.html"].problems
    assert sorted(p.name for p in (root / "shots").glob("*.png")) == [
        "bad-1280.png",
        "bad-390.png",
        "good-1280.png",
        "good-390.png",
    ]


def test_overflow_paths_decimals_and_small_figure_fonts_are_reported(checked):
    bad = checked[0]["bad.html"]
    assert not bad.ok
    assert any("at 1280 px: pre" in line and "wider than its box" in line for line in bad.overflow)
    assert any(line.startswith("at 390 px") for line in bad.overflow)
    assert bad.long_decimals == ["0.123456"]
    assert bad.machine_paths and "/results/x.csv" in bad.machine_paths[0]
    small, bare = bad.small_fonts
    assert "small.png" in small and "(at least 9 pt)" in small
    assert "bare.png has no font record" in bare
    assert bad.unrendered_math == ["$\\ell^*(n)$", "\\frac"]
