"""Reusing an executed chapter: what its fingerprint depends on, and that a changed or missing result file, a
changed result of a chapter it reads or a changed notebook makes it run again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerprune.book import reuse

ENV = reuse.environment()
READS = ("01_earlier",)  # the chapters the test chapter reads


@pytest.fixture
def chapter(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A source notebook, its executed copy and a results folder holding an earlier chapter's file."""
    notebook = tmp_path / "notebooks" / "02_chapter.ipynb"
    notebook.parent.mkdir()
    notebook.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    results = tmp_path / "results"
    results.mkdir()
    (results / "01_earlier.csv").write_text("a\n1\n")
    return notebook, tmp_path / "generated.ipynb", results


def executed(chapter: tuple[Path, Path, Path], parameters: dict) -> str:
    """Run the 'chapter': copy the notebook and write one result file, as the runner records it."""
    notebook, output, results = chapter
    stamp = reuse.fingerprint(notebook, parameters, results, ENV, READS)
    before = reuse.snapshot(results)
    output.write_text(notebook.read_text())
    (results / "02_mine.csv").write_text("b\n2\n")
    (results / ".02_tmp.csv").write_text("half-written")
    written = reuse.written_since(results, before)
    assert set(written) == {"02_mine.csv"}
    reuse.record(output, stamp, written)
    return stamp


def test_an_unchanged_chapter_is_reused(chapter):
    notebook, output, results = chapter
    stamp = executed(chapter, {"n": 1})
    assert reuse.reusable(output, reuse.fingerprint(notebook, {"n": 1}, results, ENV, READS), results)
    assert reuse.fingerprint(notebook, {"n": 1}, results, ENV, READS) == stamp


@pytest.mark.parametrize(
    "change",
    [
        "parameters",
        "notebook",
        "earlier result",
        "own result changed",
        "own result missing",
        "no record",
        "environment",
    ],
)
def test_any_change_runs_it_again(chapter, change):
    notebook, output, results = chapter
    executed(chapter, {"n": 1})
    parameters = {"n": 2} if change == "parameters" else {"n": 1}
    if change == "notebook":
        notebook.write_text(notebook.read_text().replace('"cells": []', '"cells": [ ]'))
    if change == "earlier result":
        (results / "01_earlier.csv").write_text("a\n9\n")
    if change == "own result changed":
        (results / "02_mine.csv").write_text("b\n3\n")
    if change == "own result missing":
        (results / "02_mine.csv").unlink()
    if change == "no record":
        output.write_text(notebook.read_text())
    shared = ENV + "x" if change == "environment" else ENV  # a package file or the machine changed
    assert not reuse.reusable(output, reuse.fingerprint(notebook, parameters, results, shared, READS), results)


def test_only_the_chapters_it_reads_count(chapter):
    notebook, _, results = chapter
    stamp = reuse.fingerprint(notebook, {}, results, ENV, READS)
    (results / "07_later.csv").write_text("c\n")
    (results / "00_other.csv").write_text("d\n")
    assert reuse.fingerprint(notebook, {}, results, ENV, READS) == stamp
    alone = reuse.fingerprint(notebook, {}, results, ENV)
    (results / "01_earlier.csv").write_text("a\n9\n")
    assert reuse.fingerprint(notebook, {}, results, ENV) == alone  # a chapter that reads nothing is not stale


def test_the_claims_chapter_declares_every_chapter_whose_files_its_ledger_reads():
    import ast

    from layerprune.study import claims, files

    tree = ast.parse(Path(claims.__file__).read_text())
    used = {
        getattr(files, node.attr)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "files"
        and node.attr.isupper()
        and isinstance(getattr(files, node.attr), str)
        and getattr(files, node.attr).endswith((".csv", ".json"))  # result files, not column names
    }
    assert len(used) >= 8
    assert {files.chapter_prefix(name) for name in used} == {c[:2] for c in files.READS["07_claims"]}
