"""What every bench script shares: the common options, the machine header, and printing reports."""

from __future__ import annotations

import argparse
import os
import warnings

import torch
import transformers

from layerprune.machine import describe_machine
from layerprune.speed import Report, use_threads

DEFAULT_MODEL = "smollm2-135m"


def parser(
    description: str, model: str | None = DEFAULT_MODEL, *, model_option: bool = True, threads: int = 1
) -> argparse.ArgumentParser:
    """An argument parser with the options every bench takes: --model (default `model`; left out without
    `model_option`), --threads (default `threads`), --seed."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if model_option:
        parser.add_argument("--model", default=model, help=f"model name or directory (default {model})")
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch CPU threads (default {threads}; 1: with other jobs on the machine, 2 threads ran smollm2 3.6x "
        "slower than 1 here, as the threads wait for each other; 0 = torch's default, every core)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for everything random (default 0)")
    return parser


def size_options(
    parser: argparse.ArgumentParser, *, batch_size: int, batch_help: str, repeats: int, block_size: int | None = 128
) -> None:
    """Add --batch-size, --repeats and (unless `block_size` is None) --block-size with these defaults."""
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"{batch_help} (default {batch_size})")
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"rounds, each variant once per round (default {repeats})"
    )
    if block_size is not None:
        parser.add_argument(
            "--block-size", type=int, default=block_size, help=f"tokens per block (default {block_size})"
        )


def fractions(text: str) -> list[float]:
    """A comma-separated list of fractions, e.g. "0,0.25,0.5"."""
    return [float(part) for part in text.split(",") if part.strip()]


def start(args: argparse.Namespace, title: str) -> None:
    """Apply the common options, quiet the libraries, and print the bench's title and the machine."""
    os.environ["OMP_NUM_THREADS"] = str(use_threads(args.threads))
    torch.manual_seed(args.seed)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"### {title}", flush=True)
    print(f"machine: {describe_machine()}", flush=True)


def show(report: Report) -> None:
    """Print a report (table and goals) as plain text."""
    print(report.text(), flush=True)
