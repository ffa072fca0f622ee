"""Student notebooks: copies of the chapter notebooks with the solutions taken out.

Markdown cells tagged ``solution`` are dropped; code cells tagged ``solution`` become stubs tagged ``stub`` that
keep each function's signature and docstring (and the cell's imports) with the body
``raise NotImplementedError("TODO: ...")``. ``{exercise}`` directives become plain Markdown (Jupyter does not
render MyST); everything else is copied as it is, outputs cleared.
"""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

import nbformat

from ..cache import atomic_dir
from ..errors import InvalidInputError

SOLUTION_TAG = "solution"
STUB_TAG = "stub"
NOTEBOOKS = "notebooks"
_EXERCISE = re.compile(
    r"\A(?P<fence>`{3,}|:{3,})\{exercise\}[ \t]*(?P<title>[^\n]*)\n(?::\w+:[^\n]*\n)*\n?(?P<body>.*)\n(?P=fence)\s*\Z",
    re.S,
)

README = """# Exercises: {count} notebooks

Each chapter notebook ends with exercises. Code exercises ask for a function with a fixed name and signature: find
the cells marked TODO, replace `raise NotImplementedError(...)` by your code, and run the chapter to try it.

Check your functions (they are compared with layerprune's own on a tiny model, in seconds):

    layerprune check .                      # every notebook here
    layerprune check 01_similarity.ipynb    # one chapter

Only the TODO cells are run by the checker: keep your imports and helper functions in those cells.
"""


def tags(cell: nbformat.NotebookNode) -> list[str]:
    """A cell's tags."""
    return list(cell.get("metadata", {}).get("tags", []))


def has_exercises(notebook: nbformat.NotebookNode) -> bool:
    """Whether any cell is tagged ``solution``."""
    return any(SOLUTION_TAG in tags(cell) for cell in notebook.cells)


def stub_source(source: str, where: str = "a solution cell") -> str:
    """The cell's imports and each function's signature and docstring, with a TODO body."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise InvalidInputError(f"{where} is not valid Python: {error}") from None
    lines = source.splitlines()
    imports, functions = [], []
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            imports.append(ast.get_source_segment(source, node))
        elif isinstance(node, ast.FunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            docstring = ast.get_docstring(node, clean=False) is not None
            last = node.body[0].end_lineno if docstring else node.body[0].lineno - 1
            todo = " " * node.body[0].col_offset + f'raise NotImplementedError("TODO: implement {node.name}")'
            functions.append("\n".join([*lines[first - 1 : last], todo]))
    if not functions:
        raise InvalidInputError(f"{where} defines no function: a code solution must define the graded function(s)")
    header = "# TODO: write the body of the function(s) below, then run `layerprune check` on this notebook."
    return "\n\n\n".join(["\n".join([header, *imports]), *functions]) + "\n"


def _plain_exercise(text: str) -> str:
    """An ``{exercise}`` directive as plain Markdown (Jupyter does not render MyST directives)."""
    match = _EXERCISE.match(text)
    if not match:
        return text
    return f"### Exercise: {match['title'].strip()}\n\n{match['body'].strip()}\n"


def student_notebook(notebook: nbformat.NotebookNode, name: str = "notebook") -> nbformat.NotebookNode:
    """A copy of `notebook` without its solutions: markdown ones dropped, code ones turned into stubs."""
    student = copy.deepcopy(notebook)
    cells = []
    for index, cell in enumerate(student.cells):
        cell_tags = tags(cell)
        if SOLUTION_TAG in cell_tags:
            if cell.cell_type != "code":
                continue
            cell.source = stub_source(cell.source, f"{name} cell {index}")
            cell.metadata["tags"] = [STUB_TAG] + [t for t in cell_tags if t != SOLUTION_TAG and "hide" not in t]
        elif cell.cell_type == "markdown":
            cell.source = _plain_exercise(cell.source)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    student.cells = cells
    return student


def make_assignment(out: str | Path, root: str | Path = ".", *, force: bool = False) -> list[Path]:
    """Write the student notebooks of every chapter with exercises into `out`, atomically.

    An existing non-empty `out` is refused unless `force` (then it is replaced as a whole).
    """
    root, out = Path(root).resolve(), Path(out).resolve()
    sources = sorted((root / NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))
    notebooks = {p.name: nbformat.read(p, as_version=4) for p in sources}
    notebooks = {name: nb for name, nb in notebooks.items() if has_exercises(nb)}
    if not notebooks:
        raise InvalidInputError(f"no chapter notebook with exercises under {root / NOTEBOOKS}; pass --root")
    if out.exists():
        if not out.is_dir():
            raise InvalidInputError(f"{out} exists and is not a directory")
        if root == out or root.is_relative_to(out):
            raise InvalidInputError(f"{out} holds the source notebooks; write the assignment somewhere else")
        if any(out.iterdir()) and not force:
            raise InvalidInputError(f"{out} is not empty; choose a new directory, or pass --force to replace it")
    with atomic_dir(out) as tmp:
        for name, notebook in notebooks.items():
            nbformat.write(student_notebook(notebook, name), tmp / name)
        (tmp / "README.md").write_text(README.format(count=len(notebooks)))
    return [out / name for name in notebooks]
