"""`layerprune book`: execute the chapter notebooks with papermill and build the HTML book."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import book


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("book", help="execute the notebooks into book/generated and build _build/html")
    parser.add_argument("--root", default=".", help="the repository root (holds _config.yml, notebooks/, book/)")
    parser.add_argument(
        "--profile",
        default="default",
        choices=book.PROFILES,
        help="parameter profile: smoke (tiny model), default (embedded model, CPU), paper (GPU)",
    )
    parser.add_argument("--parameters", metavar="YAML", help="a YAML file of parameters (flat, or common/chapters)")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set one parameter in every chapter that has it; VALUE is parsed as YAML",
    )
    parser.add_argument("--only", action="append", metavar="CHAPTER", help="execute only this chapter (repeatable)")
    parser.add_argument("--no-build", action="store_true", help="execute the notebooks but do not build the HTML")
    parser.add_argument(
        "--force", action="store_true", help="execute every chapter, even one unchanged since its last run"
    )
    parser.set_defaults(run=_run)
    check = commands.add_parser(
        "check-book",
        help="open every built page in headless Chromium at 1280 and 390 px: it loads offline and reads well "
        "(nothing runs sideways, no path of this machine, no table number with more than 4 decimals, figure fonts "
        "of at least 9 pt)",
    )
    check.add_argument("--html", default="_build/html", help="the built book (default: _build/html)")
    check.add_argument(
        "--screenshots", metavar="DIR", help="also save full-page screenshots of every page at both widths here"
    )
    check.add_argument(
        "--results",
        metavar="DIR",
        help="also check that every table the chapters show holds the numbers of a CSV file in DIR (e.g. "
        "results/default), with the executed chapters in book/generated next to --html's _build",
    )
    check.set_defaults(run=_check)


def _run(args: argparse.Namespace) -> None:
    run = book.run_book(
        args.root,
        profile=args.profile,
        parameter_file=args.parameters,
        overrides=book.parse_overrides(args.parameter),
        only=args.only,
        build=not args.no_build,
        force=args.force,
    )
    for chapter, seconds in run.executed.items():
        print(f"{chapter}: {seconds:.1f} s")
    for chapter in run.reused:
        print(f"{chapter}: reused")
    if run.html:
        print(f"book: {run.html / 'index.html'}")
    print(f"total: {run.seconds:.1f} s")


def _check(args: argparse.Namespace) -> None:
    from ..book.pages import check_pages
    from ..book.runner import GENERATED
    from ..errors import InvalidInputError

    reports = check_pages(args.html, args.screenshots)
    for report in reports:
        status = "ok" if report.ok else f"{len(report.problems)} problem(s)"
        print(f"{report.page}: {report.images} images, {report.math} formulas, {status}")
        for problem in report.problems:
            print(f"  - {problem}")
    failures = []
    bad = [r.page for r in reports if not r.ok]
    if bad:
        failures.append(f"{len(bad)} of {len(reports)} page(s) fail the checks listed above: {', '.join(bad)}")
    else:
        print(f"all {len(reports)} pages load offline and read well at 1280 and 390 px")
    if args.results:
        failures += _check_tables(Path(args.html).resolve().parents[1] / GENERATED, Path(args.results))
        failures += _check_ledger(Path(args.results))
    if failures:
        raise InvalidInputError("; ".join(failures))


def _check_tables(generated: Path, results: Path) -> list[str]:
    """Print the comparison of the shown tables with the result files; the failure, if any."""
    from ..book.table_check import check_tables

    check = check_tables(generated, results)
    for chapter, missing in check.mismatches:
        print(f"{chapter}: a table shows numbers that no row of a result file holds: {', '.join(missing)}")
    if not check.ok:
        return [f"{len(check.mismatches)} of {check.checked} tables do not match {results}"]
    print(f"all {check.checked} tables hold the numbers of the result files in {results} (to the digits shown)")
    return []


def _check_ledger(results: Path) -> list[str]:
    """Recompute the claims ledger from the result files and compare it with the one the book shows."""
    from ..study import files
    from ..study.claims import check_ledger

    shown = results / files.CLAIMS
    if not shown.is_file():
        return [f"{shown} is missing: the claims chapter was not run"]
    differ = check_ledger(results, shown)
    for line in differ:
        print(f"07_claims: the ledger differs from the result files: {line}")
    if differ:
        return [f"{len(differ)} ledger line(s) do not follow from {results}"]
    print(f"the claims ledger follows from the result files in {results}")
    return []
