"""Grade the functions written in a notebook's exercise cells against layerprune's own implementation.

Only the cells tagged ``solution`` or ``stub`` are executed, in a fresh namespace that already holds
``torch``, ``np`` (numpy) and ``lp`` (layerprune); the rest of the notebook is never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import torch

from ..errors import InvalidInputError
from .assignment import SOLUTION_TAG, STUB_TAG, tags
from .exercises import Exercise, Failure, chapter_exercises, exercises_named

_MAGIC = re.compile(r"^(\s*)([%!])", re.M)


@dataclass(frozen=True)
class Outcome:
    """The grade of one exercise in one notebook; `message` says what went wrong."""

    notebook: str
    exercise: Exercise
    passed: bool
    message: str = ""


def exercise_namespace(notebook: nbformat.NotebookNode, name: str) -> tuple[dict[str, Any], list[str]]:
    """Run the exercise cells; the resulting namespace, and one message per cell that failed to run."""
    import layerprune

    namespace: dict[str, Any] = {"__name__": "__exercises__", "torch": torch, "np": np, "lp": layerprune}
    problems = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not {SOLUTION_TAG, STUB_TAG} & set(tags(cell)):
            continue
        filename = f"<{name} cell {index}>"
        try:
            exec(compile(_MAGIC.sub(r"\1# \2", cell.source), filename, "exec"), namespace)
        except Exception as error:
            line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
            where = f" (line {line})" if line else ""
            problems.append(f"exercise cell {index} raised {type(error).__name__}{where}: {error}")
    return namespace, problems


def check_notebook(path: str | Path) -> list[Outcome]:
    """Grade every exercise of one notebook (its chapter is known by the file name or by the functions it defines)."""
    path = Path(path)
    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as error:
        raise InvalidInputError(f"cannot read the notebook {path}: {error}") from None
    namespace, problems = exercise_namespace(notebook, path.name)
    exercises = chapter_exercises(path.stem) or exercises_named(list(namespace))
    outcomes = []
    for exercise in exercises:
        function = namespace.get(exercise.name)
        if not callable(function):
            message = f"no function {exercise.signature} is defined in the exercise cells (tagged stub or solution)"
            outcomes.append(Outcome(path.name, exercise, False, "\n".join([message, *problems])))
            continue
        try:
            exercise.grade(function)
        except Failure as failure:
            outcomes.append(Outcome(path.name, exercise, False, str(failure)))
        else:
            outcomes.append(Outcome(path.name, exercise, True))
    return outcomes


def notebooks_in(paths: Iterable[str | Path]) -> list[Path]:
    """The notebooks named, and the ``*.ipynb`` files directly inside the directories named."""
    found: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found.extend(sorted(entry.glob("*.ipynb")))
        elif entry.is_file():
            found.append(entry)
        else:
            raise InvalidInputError(f"{entry} does not exist")
    if not found:
        raise InvalidInputError(f"no notebooks in {', '.join(map(str, paths))}")
    return found


def check_paths(paths: Iterable[str | Path]) -> dict[Path, list[Outcome]]:
    """`check_notebook` for every notebook named or found in the directories named."""
    return {path: check_notebook(path) for path in notebooks_in(paths)}
