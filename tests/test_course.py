"""Course support: the solved chapters pass the checker, student notebooks are stubs that fail with helpful
messages, subtle mistakes are caught, `assignment` writes atomically, and the publishing configuration is valid."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from layerprune import cli
from layerprune.book.launch import source_notebook_links
from layerprune.course import EXERCISES, check_notebook, check_paths, make_assignment, student_notebook
from layerprune.course import assignment as assignment_module
from layerprune.course.assignment import SOLUTION_TAG, STUB_TAG, stub_source, tags
from layerprune.errors import InvalidInputError

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


NOTEBOOKS = ROOT / "notebooks"


def _chapters_with_exercises() -> list[Path]:
    return [ROOT / "notebooks" / f"{chapter}.ipynb" for chapter in sorted({e.chapter for e in EXERCISES.values()})]


def _one_cell_notebook(path: Path, source: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("raise RuntimeError('the checker must not run this cell')"),
        nbformat.v4.new_code_cell(textwrap.dedent(source), metadata={"tags": [STUB_TAG]}),
    ]
    nbformat.write(notebook, path)
    return path


def test_every_chapter_has_two_to_four_exercises_and_graded_functions():
    assert [p.stem for p in _chapters_with_exercises()] == [p.stem for p in sorted(NOTEBOOKS.glob("0[1-5]_*.ipynb"))]
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        exercises = [c for c in notebook.cells if c.cell_type == "markdown" and "{exercise}" in c.source]
        assert 2 <= len(exercises) <= 4, path.name
    for path in _chapters_with_exercises():
        notebook = nbformat.read(path, as_version=4)
        exercises = [c for c in notebook.cells if c.cell_type == "markdown" and "{exercise}" in c.source]
        assert 2 <= len(exercises) <= 4, path.name
        assert "provenance.show()" in notebook.cells[-1].source, "exercises go before the provenance cell"
        for cell in notebook.cells:
            if cell.cell_type == "markdown" and ("{solution" in cell.source):
                assert SOLUTION_TAG in tags(cell), (path.name, cell.source[:60])
        defined = {e.name for e in EXERCISES.values() if e.chapter == path.stem}
        solutions = "\n".join(c.source for c in notebook.cells if c.cell_type == "code" and SOLUTION_TAG in tags(c))
        assert defined and all(f"def {name}(" in solutions for name in defined), path.name


def test_the_solved_chapters_pass_the_checker():
    results = check_paths(_chapters_with_exercises())
    outcomes = [o for found in results.values() for o in found]
    assert {o.exercise.name for o in outcomes} == set(EXERCISES)
    assert all(o.passed for o in outcomes), [(o.exercise.name, o.message) for o in outcomes if not o.passed]


def test_student_notebooks_are_stubs_that_fail_with_helpful_messages(tmp_path, capsys):
    out = tmp_path / "hw"
    written = make_assignment(out, ROOT)
    assert [p.name for p in written] == [p.name for p in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))]
    assert (out / "README.md").is_file()
    for path in written:
        source = nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
        student = nbformat.read(path, as_version=4)
        nbformat.validate(student)
        assert not any(SOLUTION_TAG in tags(c) for c in student.cells)
        assert not any("{solution" in c.source or "{exercise}" in c.source for c in student.cells)
        stubs = [c for c in student.cells if STUB_TAG in tags(c)]
        solutions = [c for c in source.cells if c.cell_type == "code" and SOLUTION_TAG in tags(c)]
        assert len(stubs) == len(solutions)
        for stub, solution in zip(stubs, solutions, strict=True):
            assert 'raise NotImplementedError("TODO: implement' in stub.source
            signatures = [line for line in solution.source.splitlines() if line.startswith("def ")]
            assert signatures and all(line in stub.source.splitlines() for line in signatures)
        kept = [c.source for c in source.cells if c.cell_type == "code" and SOLUTION_TAG not in tags(c)]
        assert [c.source for c in student.cells if c.cell_type == "code" and STUB_TAG not in tags(c)] == kept
    assert cli.main(["check", str(out)]) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout.count("FAIL") == len(EXERCISES) and "PASS" not in stdout
    assert "still the TODO stub (NotImplementedError)" in stdout and f"0 of {len(EXERCISES)} exercises pass" in stdout
    assert f"{len(EXERCISES)} of {len(EXERCISES)} exercises fail" in stderr


WRONG = [
    (
        "01_similarity",
        """
        import math

        def angular_distance(a, b):
            return torch.arccos(a @ b / (a.norm() * b.norm())).item() / math.pi
        """,
        "atan2",
    ),
    (
        "01_similarity",
        """
        def residual_stream(model, input_ids):
            with torch.no_grad():
                return torch.stack(model(input_ids=input_ids, output_hidden_states=True).hidden_states)
        """,
        "AFTER the final norm",
    ),
    (
        "02_selection",
        """
        def optimal_start(mean, n):
            return int(np.argmin(mean[n, : mean.shape[0] - 1 - n]))
        """,
        "0..L-n inclusive",
    ),
    ("02_selection", "def optimal_start(mean, n):\n    return int(np.argmin(mean[n]))\n", "NaN"),
    (
        "02_selection",
        "def last_block(num_layers, n):\n    return list(range(num_layers - n, num_layers))\n",
        "always kept",
    ),
    (
        "03_healing",
        """
        def skip_layers_logits(model, input_ids, layers):
            return lp.prune(model, layers, inplace=True)(input_ids=input_ids).logits
        """,
        "the model changed",
    ),
    (
        "03_healing",
        """
        import math

        def normalized_loss(logits, input_ids):
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), input_ids.flatten())
            return loss.item() / math.log(logits.shape[-1])
        """,
        "drop the last position's logits",
    ),
    (
        "04_results",
        """
        def pruned_parameters(model, layers):
            decoder = lp.get_adapter(model).decoder_layers(model)
            removed = sum(p.numel() for i in layers for p in decoder[i].parameters())
            return sum(t.numel() for t in model.state_dict().values()) - removed
        """,
        "tied weights",
    ),
    (
        "05_across_models",
        "def layers_to_remove(num_layers, fraction):\n    return round(fraction * num_layers)\n",
        "round()",
    ),
    (
        "05_across_models",
        "def block_influence(mean, n):\n    return [int(i) for i in np.argsort(mean[1, :-1], kind='stable')[:n]]\n",
        "increasing order",
    ),
]


@pytest.mark.parametrize(("chapter", "source", "hint"), WRONG, ids=[f"{c}-{h}" for c, _, h in WRONG])
def test_subtly_wrong_implementations_fail_with_a_useful_message(tmp_path, chapter, source, hint):
    outcomes = check_notebook(_one_cell_notebook(tmp_path / f"{chapter}.ipynb", source))
    name = source.split("def ")[1].split("(")[0]
    graded = {o.exercise.name: o for o in outcomes}
    assert not graded[name].passed
    message = graded[name].message
    assert message.startswith("on ") and hint in message, message


def test_a_failing_cell_and_a_missing_function_are_reported(tmp_path):
    path = _one_cell_notebook(tmp_path / "my_copy.ipynb", "def angular_distance(a, b):\n    return helper(a, b)\n")
    (outcome,) = check_notebook(path)  # found by the function it defines, although the file was renamed
    assert not outcome.passed and "NameError" in outcome.message and "same cell" in outcome.message
    broken = _one_cell_notebook(tmp_path / "01_similarity.ipynb", "def angular_distance(a, b)\n    return 0\n")
    outcomes = check_notebook(broken)
    assert [o.passed for o in outcomes] == [False, False]
    assert "SyntaxError" in outcomes[0].message and "no function angular_distance(a, b)" in outcomes[0].message


def test_stub_source_keeps_imports_signature_and_docstring():
    source = textwrap.dedent(
        '''
        import math


        def area(radius: float) -> float:
            """The area of a circle."""
            return math.pi * radius**2


        def double(x):
            return 2 * x
        '''
    )
    stub = stub_source(source)
    assert "import math" in stub and "math.pi" not in stub and "return 2 * x" not in stub
    assert 'def area(radius: float) -> float:\n    """The area of a circle."""\n    raise NotImplementedError(' in stub
    assert 'def double(x):\n    raise NotImplementedError("TODO: implement double")' in stub
    compile(stub, "stub", "exec")
    with pytest.raises(InvalidInputError, match="defines no function"):
        stub_source("x = 1\n")


def test_student_notebook_drops_markdown_solutions_and_keeps_the_rest():
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("````{exercise} Think\n:label: ex-think\n\nWhy?\n````"),
        nbformat.v4.new_markdown_cell(
            "````{solution} ex-think\n:class: dropdown\n\nBecause.\n````", metadata={"tags": [SOLUTION_TAG]}
        ),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    student = student_notebook(notebook)
    assert [c.source for c in student.cells] == ["### Exercise: Think\n\nWhy?\n", "print(1)"]
    assert len(notebook.cells) == 3  # the source is not modified


def test_assignment_refuses_a_non_empty_directory_and_writes_atomically(tmp_path, monkeypatch, files_under):
    out = tmp_path / "hw"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match=r"not empty.*--force"):
        make_assignment(out, ROOT)
    assert files_under(out) == {"mine.txt"}
    with pytest.raises(InvalidInputError, match="holds the source notebooks"):
        make_assignment(ROOT.parent, ROOT, force=True)

    calls = []

    def failing(notebook, name="notebook"):
        calls.append(name)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return student_notebook(notebook, name)

    monkeypatch.setattr(assignment_module, "student_notebook", failing)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="disk full"):
        make_assignment(fresh, ROOT)
    assert not fresh.exists() and files_under(tmp_path) == {"hw/mine.txt"}
    monkeypatch.undo()

    written = make_assignment(out, ROOT, force=True)
    assert files_under(out) == {p.name for p in written} | {"README.md"}


def test_cli_assignment_and_check(tmp_path, capsys):
    out = tmp_path / "hw"
    assert cli.main(["assignment", "--out", str(out), "--root", str(ROOT)]) == 0
    assert "layerprune check" in capsys.readouterr().out
    assert cli.main(["assignment", "--out", str(out), "--root", str(ROOT)]) == 2
    assert "not empty" in capsys.readouterr().err
    solved = tmp_path / "02_selection.ipynb"
    shutil.copy(ROOT / "notebooks" / "02_selection.ipynb", solved)
    assert cli.main(["check", str(solved)]) == 0
    assert "PASS" in (stdout := capsys.readouterr().out) and "2 of 2 exercises pass" in stdout
    assert cli.main(["check", str(tmp_path / "nothing")]) == 2


def test_launch_buttons_open_the_source_notebooks():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "sphinx_exercise" in config["sphinx"]["extra_extensions"]
    assert "layerprune.book.launch" in config["sphinx"]["extra_extensions"]
    assert config["html"]["use_repository_button"] and config["repository"]["branch"] == "main"
    assert {"binderhub_url", "colab_url", "jupyterhub_url", "notebook_interface"} <= set(config["launch_buttons"])
    page = "book/generated/01_similarity.ipynb"
    urls = [
        f"https://mybinder.org/v2/gh/OWNER/layerprune/main?urlpath=lab/tree/{page}",
        f"https://colab.research.google.com/github/OWNER/layerprune/blob/main/{page}",
        f"https://hub.example.edu/hub/user-redirect/git-pull?repo=x&urlpath=lab/tree/layerprune/{page}&branch=main",
    ]
    context = {"header_buttons": [{"label": "launch-buttons", "buttons": [{"url": u} for u in urls]}]}
    source_notebook_links(None, "book/generated/01_similarity", "page.html", context, None)
    for button in context["header_buttons"][0]["buttons"]:
        assert "notebooks/01_similarity.ipynb" in button["url"] and "generated" not in button["url"]


def test_every_sphinx_extension_is_pinned():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    pins = {line.split("==")[0].lower().replace("_", "-") for line in (ROOT / "requirements.txt").read_text().split()}
    for extension in config["sphinx"]["extra_extensions"]:
        if not extension.startswith("layerprune."):
            assert extension.lower().replace("_", "-") in pins, extension


def test_the_book_workflow_builds_the_default_book_and_deploys_pages():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert "push" in workflow[True]  # YAML 1.1 reads the key `on` as True
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    steps = build["steps"]
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert python["with"]["python-version"] == "3.11"
    commands = [s.get("run") for s in steps]
    assert commands.index("make setup") < commands.index("make book PROFILE=default")
    restore = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/cache/restore@"))
    save = next(i for i, s in enumerate(steps) if s.get("uses", "").startswith("actions/cache/save@"))
    assert restore < commands.index("make setup") and save > commands.index("make book PROFILE=default")
    assert steps[save]["if"] == "always()" and steps[save]["with"]["path"] == steps[restore]["with"]["path"]
    kept = steps[save]["with"]["path"].split()
    assert {".cache/layerprune", "results/default", "book/generated"} <= set(kept)
    assert build["env"]["LAYERPRUNE_CACHE"].endswith(".cache/layerprune")
    checks = yaml.safe_load((WORKFLOW.parent / "checks.yml").read_text())
    assert "make book PROFILE=smoke" in [s.get("run") for job in checks["jobs"].values() for s in job["steps"]]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"
    assert deploy["needs"] == "build" and deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert any(s.get("uses", "").startswith("actions/deploy-pages@") for s in deploy["steps"])


def _linter() -> str | None:
    return shutil.which("check-jsonschema") or shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))


def test_the_book_workflow_passes_the_github_workflow_schema(tmp_path):
    linter = _linter()
    if linter is None:
        pytest.skip("check-jsonschema is not installed (requirements-dev.txt)")
    command = [linter, "--builtin-schema", "vendor.github-workflows"]
    result = subprocess.run(
        [*command, str(WORKFLOW), str(WORKFLOW.parent / "checks.yml")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:"))
    assert subprocess.run([*command, str(broken)], capture_output=True, check=False).returncode != 0
