"""The book's wall time and memory: `layerprune book` (execute every chapter, build the HTML) run twice in a copy of
the book's sources with a fresh LAYERPRUNE_CACHE: cold (no result cached, no model converted) then warm (the same
cache). The downloaded wheels are linked into the fresh cache, so no download time is counted. Seconds and the
kernel's peak memory per chapter come from the record the runner writes (`layerprune.book.runner.RUN_RECORD`).

--model runs every chapter on that model instead of the profile's. --record ROOT reports a build already made
there (its seconds, peak memory, GFLOPs and the floor they set at the machine's matmul rate) and runs nothing. The
smoke profile (tiny model) takes a few minutes; the default profile over an hour cold on a 2-core CPU:
`python bench/book.py --profile default`."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import _common

from layerprune.book import PROFILES
from layerprune.book.runner import BookRun as Record
from layerprune.cache import cache_root
from layerprune.speed import Report

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("_config.yml", "_toc.yml", "notebooks", "book")


def copy_sources(work: Path) -> None:
    """The book's sources, without executed chapters, into a new directory `work`."""
    work.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, work / name, ignore=shutil.ignore_patterns("generated"))
        else:
            shutil.copy(source, work / name)


def fresh_cache(cache: Path) -> None:
    """An empty cache that shares the current cache's downloaded wheels (if any)."""
    cache.mkdir(parents=True)
    wheels = cache_root() / "wheels"
    if wheels.is_dir():
        (cache / "wheels").symlink_to(wheels, target_is_directory=True)


@dataclass
class BookRun:
    """One `layerprune book`: wall seconds, exit code, its output, and the runner's record of it (None if it failed
    before writing one)."""

    seconds: float
    code: int
    output: str
    record: Record | None


def run_book(work: Path, cache: Path, profile: str, model: str | None) -> BookRun:
    """`layerprune book --profile <profile>` in `work` with `cache` (every chapter on `model` if given)."""
    command = [str(Path(sys.executable).with_name("layerprune")), "book", "--root", str(work), "--profile", profile]
    command += ["-p", "model", model] if model else []
    env = os.environ | {"LAYERPRUNE_CACHE": str(cache)}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    record = Record.load(work) if done.returncode == 0 else None
    return BookRun(seconds, done.returncode, done.stdout + done.stderr, record)


def report(cold: BookRun, warm: BookRun, profile: str) -> Report:
    """Seconds per chapter and in all, cold and warm, and each chapter's peak memory cold; "rest" is everything
    else (start-up, the HTML build)."""
    cold_chapters, warm_chapters = cold.record.executed, warm.record.executed
    rows = [
        {
            "part": name,
            "cold s": cold_chapters[name],
            "warm s": warm_chapters.get(name, math.nan),
            "cold peak GiB": cold.record.peak_mib[name] / 1024,
        }
        | floor_columns(cold.record, name)
        for name in cold_chapters
    ]
    rows.append(
        {
            "part": "rest (start-up, HTML build)",
            "cold s": cold.seconds - sum(cold_chapters.values()),
            "warm s": warm.seconds - sum(warm_chapters.values()),
        }
    )
    rows.append({"part": "make book, in all", "cold s": cold.seconds, "warm s": warm.seconds})
    for row in rows:
        row["warm / cold"] = row["warm s"] / row["cold s"]
    return Report(f"make book wall time, {profile} profile (exit codes {cold.code}, {warm.code})", rows)


def floor_columns(record: Record, chapter: str) -> dict[str, float]:
    """A chapter's work against this machine's matmul rate: the GFLOPs its models computed (`speed.flops`), the
    floor they set (GFLOPs / rate, seconds) and its wall time as a multiple of that floor."""
    gflop = record.gflop.get(chapter, math.nan)
    floor = gflop / record.matmul_gflops if record.matmul_gflops else math.nan
    return {"GFLOP": gflop, "floor s": floor, "wall / floor": record.executed[chapter] / floor if floor else math.nan}


def efficiency(record: Record) -> Report:
    """One finished build's record (`layerprune book` or `make book`, read from its `RUN_RECORD`): seconds, peak
    memory, GFLOPs and floor per executed chapter, and in all."""
    rows = [
        {"part": name, "s": seconds, "peak GiB": record.peak_mib[name] / 1024} | floor_columns(record, name)
        for name, seconds in record.executed.items()
    ]
    gflop, chapters = sum(record.gflop.values()), sum(record.executed.values())
    floor = gflop / record.matmul_gflops if record.matmul_gflops else math.nan
    rows.append(
        {"part": "chapters, in all", "s": chapters, "GFLOP": gflop, "floor s": floor, "wall / floor": chapters / floor}
    )
    rows.append({"part": "the whole run (with set-up and HTML)", "s": record.seconds})
    title = (
        f"book run of the {record.profile} profile ({', '.join(record.models)}), commit {record.commit}; matmul rate "
        f"{record.matmul_gflops:.1f} GFLOP/s, floor = GFLOPs / rate"
    )
    return Report(title, rows)


def main() -> None:
    parser = _common.parser(__doc__, model=None, threads=0)  # the book as `make book` runs it: every core
    parser.add_argument("--profile", choices=PROFILES, default="smoke", help="book profile (default smoke)")
    parser.add_argument(
        "--record", type=Path, help="report the run recorded under this book root (e.g. after `make book`), run none"
    )
    args = parser.parse_args()
    if args.record:
        _common.show(efficiency(Record.load(args.record)))
        return
    _common.start(args, f"book ({args.profile} profile)")
    with tempfile.TemporaryDirectory(prefix="layerprune-book-bench-") as tmp:
        work, cache = Path(tmp) / "work", Path(tmp) / "cache"
        copy_sources(work)
        fresh_cache(cache)
        runs = []
        for name in ("cold", "warm"):
            runs.append(run_book(work, cache, args.profile, args.model))
            print(f"{name}: {runs[-1].seconds:.1f} s, exit code {runs[-1].code}", flush=True)
        failed = [run for run in runs if run.code]
        if failed:
            print(f"the book failed; the end of its output:\n{failed[0].output[-4000:]}", flush=True)
            sys.exit(1)
        _common.show(report(*runs, args.profile))


if __name__ == "__main__":
    main()
