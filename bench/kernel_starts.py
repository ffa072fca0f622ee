"""Kernels started at once: how many die before their first cell, on TCP ports (papermill's default) and on the
Unix sockets in a private directory that the book's runner gives each chapter's kernel (`runner.kernel_sockets`).

A one-cell notebook is executed --starts times, --at-once at a time (each in its own process, as two books on one
machine would), first over TCP, then over sockets. A TCP port is found free, released, and bound by the kernel
only once it has started, so another kernel can take it in between: such starts fail with "Kernel died before
replying to kernel_info" or a timeout. The goal: no failure on sockets."""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
from collections import Counter
from pathlib import Path

import _common

from layerprune.book.runner import kernel_sockets
from layerprune.speed import Report
from layerprune.speed.report import Check

TRANSPORTS = ("tcp", "sockets")


def start_one(job: tuple[str, str]) -> str | None:
    """Execute the notebook at `job[1]` over `job[0]`; None, or the failure's type and last line."""
    import papermill

    transport, notebook = job
    options = kernel_sockets() if transport == "sockets" else contextlib.nullcontext({})
    with tempfile.TemporaryDirectory(prefix="layerprune-bench-") as out, options as connection:
        try:
            papermill.execute_notebook(
                notebook, str(Path(out) / "out.ipynb"), kernel_name="python3", progress_bar=False, **connection
            )
        except Exception as error:  # every way a start fails is what is counted
            return f"{type(error).__name__}: {str(error).strip().splitlines()[-1][:80]}"
    return None


def main() -> None:
    parser = _common.parser(__doc__, model_option=False)
    parser.add_argument("--starts", type=int, default=400, help="kernels started per transport (default 400)")
    parser.add_argument("--at-once", type=int, default=8, help="kernels starting at the same time (default 8)")
    args = parser.parse_args()
    _common.start(args, "kernel starts at once: TCP ports against private Unix sockets")
    import nbformat

    rows, failed = [], {}
    with tempfile.TemporaryDirectory(prefix="layerprune-bench-") as work:
        notebook = Path(work) / "one_cell.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), notebook)
        with multiprocessing.get_context("spawn").Pool(args.at_once) as pool:
            for transport in TRANSPORTS:
                jobs = [(transport, str(notebook))] * args.starts
                errors = [e for e in pool.imap_unordered(start_one, jobs) if e is not None]
                failed[transport] = len(errors)
                kinds = "; ".join(f"{n} x {kind}" for kind, n in Counter(errors).most_common(3))
                rows.append({"transport": transport, "starts": args.starts, "at once": args.at_once,
                             "failed": len(errors), "failures": kinds or "-"})  # fmt: skip
    checks = [Check("kernels that failed to start on sockets", failed["sockets"], 0, higher_is_better=False)]
    _common.show(Report("kernel starts", rows, checks))


if __name__ == "__main__":
    main()
