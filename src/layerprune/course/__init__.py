"""Course support: the chapters' graded exercises, student notebooks with stubs, and the checker.

Conventions in the chapter notebooks (notebooks/NN_*.ipynb):

- every cell of a solution is tagged ``solution``: markdown ones (conceptual answers in a ``{solution}`` directive,
  and the ``{solution-start}`` / ``{solution-end}`` gates that fold a code solution into a dropdown) are dropped
  from the student notebooks; code ones define the graded functions and become stubs tagged ``stub``;
- each graded function has the fixed name and signature listed in `EXERCISES`.
"""

from .assignment import SOLUTION_TAG, STUB_TAG, make_assignment, student_notebook
from .checker import Outcome, check_notebook, check_paths
from .exercises import EXERCISES, Exercise

__all__ = [
    "EXERCISES",
    "SOLUTION_TAG",
    "STUB_TAG",
    "Exercise",
    "Outcome",
    "check_notebook",
    "check_paths",
    "make_assignment",
    "student_notebook",
]
