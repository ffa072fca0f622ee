"""`layerprune assignment` and `layerprune check`: student notebooks with stubs, and their grader."""

from __future__ import annotations

import argparse
import textwrap


def register(commands: argparse._SubParsersAction) -> None:
    assignment = commands.add_parser(
        "assignment", help="write student notebooks: the chapters with every solution replaced by a TODO stub"
    )
    assignment.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) directory to write")
    assignment.add_argument("--root", default=".", help="the repository root (holds notebooks/)")
    assignment.add_argument("--force", action="store_true", help="replace DIR even if it is not empty")
    assignment.set_defaults(run=_assignment)
    check = commands.add_parser(
        "check", help="grade the exercise functions in notebooks against layerprune's own, on a tiny model"
    )
    check.add_argument("paths", nargs="+", metavar="PATH", help="a notebook, or a directory of notebooks")
    check.set_defaults(run=_check)


def _assignment(args: argparse.Namespace) -> None:
    from ..course import make_assignment

    written = make_assignment(args.out, args.root, force=args.force)
    for path in written:
        print(f"wrote {path}")
    print(f"students check their work with: layerprune check {args.out}")


def _check(args: argparse.Namespace) -> None:
    from ..course import check_paths
    from ..errors import InvalidInputError

    results = check_paths(args.paths)
    outcomes = [outcome for found in results.values() for outcome in found]
    for path, found in results.items():
        print(path)
        if not found:
            print("  no exercises")
        for outcome in found:
            exercise = outcome.exercise
            print(f"  {'PASS' if outcome.passed else 'FAIL'}  {exercise.title}: {exercise.signature}")
            if outcome.message:
                print(textwrap.indent(outcome.message, " " * 8))
    passed = sum(outcome.passed for outcome in outcomes)
    if not outcomes:
        raise InvalidInputError(
            "no exercises found: check a chapter notebook or the folder `layerprune assignment` wrote"
        )
    print(f"{passed} of {len(outcomes)} exercises pass")
    if passed < len(outcomes):
        raise InvalidInputError(f"{len(outcomes) - passed} of {len(outcomes)} exercises fail; see the messages above")
