"""The book end to end under the smoke profile: every notebook executes, the strict HTML build is clean, and
the tables on the pages hold the numbers of the result files the notebooks wrote."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from layerprune.book import runner as book
from layerprune.book.table_check import check_tables
from layerprune.errors import InvalidInputError

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_book(tmp_path_factory):
    """A copy of the book sources, executed and built with the smoke profile (results in the work copy)."""
    work = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml", "notebooks", "book"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("generated"))
        else:
            shutil.copy(source, work / name)
    run = book.run_book(work, profile="smoke")
    return work, run


def test_every_chapter_executes_and_the_strict_build_succeeds(smoke_book):
    work, run = smoke_book
    assert list(run.executed) == book.chapters(ROOT)
    for chapter in run.executed:
        executed = json.loads((work / "book" / "generated" / f"{chapter}.ipynb").read_text())
        errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, chapter
        assert (work / "_build" / "html" / "book" / "generated" / f"{chapter}.html").is_file()
    assert (work / "_build" / "html" / "_static" / "mathjax" / "tex-chtml.js").is_file()
    recorded = book.BookRun.load(work)
    assert recorded.executed == run.executed and recorded.profile == "smoke" and "tiny-llama" in recorded.models
    pages = [*(work / "_build" / "html" / "book").rglob("*.html"), work / "_build" / "html" / "genindex.html"]
    assert len(pages) >= 12
    for page in pages:  # the site's index.html is Jupyter Book's redirect to the first page
        assert "Built with the smoke profile on tiny-llama" in page.read_text(), page
    assert all(0 < recorded.peak_mib[chapter] < 64 * 1024 for chapter in run.executed)
    assert recorded.matmul_gflops > 0 and recorded.gflop.keys() == run.executed.keys()
    assert sum(recorded.gflop.values()) > 0  # chapters whose results were cached run no model: 0 is right for them


def test_a_rerun_reuses_every_unchanged_chapter_and_builds_the_same_pages(smoke_book):
    work, _ = smoke_book
    page = work / "_build" / "html" / "book" / "generated" / "04_results.html"
    first = page.read_text()
    rerun = book.run_book(work, profile="smoke")
    assert rerun.executed == {} and rerun.reused == book.chapters(ROOT)
    assert page.read_text() == first


def test_tables_on_the_pages_equal_the_result_files(smoke_book):
    work, _ = smoke_book
    check = check_tables(work / "book" / "generated", work / "results" / "smoke")
    assert check.ok and check.checked >= 8, check.mismatches


def test_a_table_that_differs_from_its_result_file_is_reported(smoke_book, tmp_path):
    work, _ = smoke_book
    results = tmp_path / "results"
    shutil.copytree(work / "results" / "smoke", results)
    table = results / "04_results.csv"
    frame = pd.read_csv(table)
    frame["loss"] = frame["loss"] + 0.5
    frame.to_csv(table, index=False)
    check = check_tables(work / "book" / "generated", results)
    assert not check.ok and [chapter for chapter, _ in check.mismatches] == ["04_results"]


def test_unknown_parameters_profiles_and_chapters_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown book parameter"):
        book.run_book(ROOT, profile="smoke", overrides={"modle": "x"}, build=False)
    with pytest.raises(InvalidInputError, match="unknown book profile"):
        book.load_profile("huge")
    with pytest.raises(InvalidInputError, match="unknown chapter"):
        book.run_book(ROOT, profile="smoke", only=["99_nothing"], build=False)


def test_every_parameter_cell_parses_and_every_profile_fits_it(caplog):
    import papermill

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [n.stem for n in notebooks] == book.chapters(ROOT)
    for notebook in notebooks:
        assert papermill.inspect_notebook(str(notebook)), f"{notebook.name} has no parameters cell"
        for profile in book.PROFILES:
            parameters = book.chapter_parameters(notebook, [book.load_profile(profile)], notebook.stem)
            book.check_parameter_types(notebook, parameters)
    assert "Unable to parse" not in caplog.text


def test_parameter_layers_later_wins(tmp_path):
    notebook = ROOT / "notebooks" / "01_similarity.ipynb"
    layers = [
        book.load_profile("smoke"),
        {"common": {"seed": 7}, "chapters": {}},
        {"common": {"profile_blocks": 3, "not_a_parameter": 1}, "chapters": {}},
    ]
    params = book.chapter_parameters(notebook, layers, "01_similarity")
    assert params["seed"] == 7 and params["profile_blocks"] == 3 and params["model"] == "tiny-llama"
    assert "not_a_parameter" not in params
    assert book.parse_overrides([("fractions", "[0.1, 0.2]"), ("model", "gemma3-270m")]) == {
        "fractions": [0.1, 0.2],
        "model": "gemma3-270m",
    }


def test_every_page_loads_offline_with_its_figures_and_math(smoke_book, tmp_path):
    """And reads well at 1280 and 390 px: nothing runs sideways, no path of this machine, no table number with
    more than four decimals, figure fonts of at least 9 pt (`layerprune.book.pages`)."""
    pytest.importorskip("playwright")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from layerprune.book.pages import check_pages

    work, _ = smoke_book
    reports = {r.page: r for r in check_pages(work / "_build" / "html", screenshots=tmp_path)}
    assert {f"book/generated/{c}.html" for c in book.chapters(ROOT)} <= set(reports)
    for report in reports.values():
        assert report.ok, (report.page, report.problems)
    assert all(reports[f"book/generated/{c}.html"].images >= 1 for c in book.chapters(ROOT))
    assert reports["book/method.html"].math >= 10
    assert len(list(tmp_path.glob("*-1280.png"))) == len(list(tmp_path.glob("*-390.png"))) == len(reports)


@pytest.mark.parametrize("native", [True, False])
def test_the_default_profile_says_what_it_will_cost_before_it_starts(monkeypatch, native):
    from layerprune import machine

    monkeypatch.setattr(machine, "native_bf16_cpu", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    measured = book.measured_budget("default")
    minutes = measured["cold_minutes"]
    note = book.budget_note("default")
    if native:
        assert f"{minutes} minutes" in note and f"{measured['peak_gb']} GB" in note
    else:
        assert f"{2 * minutes / 60:.1f} to {4 * minutes / 60:.1f} hours" in note and "PROFILE=smoke" in note
    assert book.budget_note("smoke") == "[book] profile smoke"


def test_the_readme_gives_the_measured_budget_of_the_default_book():
    measured = book.measured_budget("default")
    readme = (ROOT / "README.md").read_text()
    hours, minutes = divmod(measured["cold_minutes"], 60)
    assert f"{hours} h {minutes} min" in readme and f"{measured['peak_gb']} GB" in readme
