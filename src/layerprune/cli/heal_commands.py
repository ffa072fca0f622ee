"""`layerprune heal` and `layerprune merge` (their options and work live in `layerprune.healing.command`)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from ..healing.command import add_heal_arguments, run_heal, run_merge
from ..models import AUTO, DTYPE_ENV, resolve_dtype
from .method_commands import add_dtype_option


def register(commands: argparse._SubParsersAction) -> None:
    heal = commands.add_parser("heal", help="heal a (pruned) model with QLoRA on the FFN projections")
    add_heal_arguments(heal)
    add_dtype_option(heal)
    heal.set_defaults(run=in_dtype(run_heal))
    merge = commands.add_parser("merge", help="merge the adapter of a `layerprune heal` run into a plain model")
    merge.add_argument("--heal-dir", type=Path, required=True, help="the --out directory of `layerprune heal`")
    merge.add_argument("--out", type=Path, help="where to save the merged model (default: HEAL_DIR/merged)")
    add_dtype_option(merge)
    merge.set_defaults(run=in_dtype(run_merge))


def in_dtype(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    """`run` with its models loaded in --dtype: healing loads them with dtype "auto", which reads $LAYERPRUNE_DTYPE
    (so do the processes it starts); --dtype auto leaves the environment as it is."""

    def run_in_dtype(args: argparse.Namespace) -> None:
        chosen = {} if args.dtype == AUTO else {DTYPE_ENV: args.dtype}
        if chosen:
            resolve_dtype(args.dtype, torch.device("cpu"))  # a bad name fails now, before any work
        with mock.patch.dict(os.environ, chosen):
            run(args)

    return run_in_dtype
