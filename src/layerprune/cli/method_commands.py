"""`layerprune profile`, `select` and `prune`: the paper's method from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..adapters import num_layers
from ..cache import atomic_dir, check_writable, model_identity
from ..data import corpus_blocks
from ..errors import InvalidInputError
from ..models import AUTO, DTYPE_CHOICES, DTYPE_ENV, load_model
from ..selection import (
    STRATEGIES,
    BlockSelection,
    get_strategy,
    layers_for_fraction,
    profile_free_block,
    select_block,
)
from ..similarity import METRICS, TOKENS, DistanceProfile, profile_distances
from ..surgery import prune


def register(commands: argparse._SubParsersAction) -> None:
    profile = commands.add_parser("profile", help="measure the distance D[n, l] between layers on a text corpus")
    _model_options(profile)
    _corpus_options(profile)
    profile.add_argument("--out", type=Path, required=True, help="where to write the profile (JSON)")
    profile.set_defaults(run=_profile)

    select = commands.add_parser("select", help="print the layers a strategy would remove, from a saved profile")
    select.add_argument("--profile", type=Path, required=True, help="a profile written by `layerprune profile`")
    _selection_options(select)
    select.set_defaults(run=_select)

    pruning = commands.add_parser("prune", help="remove layers from a model and save it with its tokenizer")
    _model_options(pruning)
    _selection_options(pruning)
    pruning.add_argument(
        "--profile", type=Path, help="a saved profile of this model (default: profile it now if the strategy needs it)"
    )
    _corpus_options(pruning)
    pruning.add_argument("--out", type=Path, required=True, help="a new directory for the pruned model")
    pruning.set_defaults(run=_prune)


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an embedded model name, a model directory or a hub id")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    add_dtype_option(parser)


def add_dtype_option(parser: argparse.ArgumentParser) -> None:
    """--dtype of the weights, "auto" by default; `models.resolve_dtype` checks it and names the choices."""
    parser.add_argument(
        "--dtype",
        default=AUTO,
        metavar="{" + ",".join(DTYPE_CHOICES) + "}",
        help=f"the weights' dtype (default: auto, i.e. ${DTYPE_ENV} if set, else bfloat16 on CUDA and on CPUs "
        "with native bf16 (AMX or AVX512-BF16), float32 elsewhere)",
    )


def _corpus_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--corpus", default="sotu", help="'sotu' (embedded) or a .txt file or folder of them (default: sotu)"
    )
    parser.add_argument("--block-size", type=int, default=128, help="tokens per sequence (default: 128)")
    parser.add_argument("--max-blocks", type=int, help="at most this many sequences (default: the whole split)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward pass (default: 8)")
    parser.add_argument("--token", choices=TOKENS, default="last", help="which tokens to compare (default: last)")
    parser.add_argument("--metric", choices=METRICS, default="angular", help="distance (default: angular)")


def _selection_options(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--n", type=int, help="number of layers to remove")
    size.add_argument("--fraction", type=float, help="fraction of the layers to remove, in [0, 1)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="similarity", help="(default: similarity)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the 'random' strategy (default: 0)")


def _profile(args: argparse.Namespace) -> None:
    if args.out.is_dir():
        raise InvalidInputError(f"--out {args.out} is a directory; name the profile's JSON file")
    check_writable(args.out)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    profile = _measure(args, model, tokenizer)
    profile.save(args.out)
    print(f"wrote {args.out}: D[n, l] of {profile.num_layers} layers over {profile.num_sequences} sequences")


def _select(args: argparse.Namespace) -> None:
    profile = DistanceProfile.load(args.profile)
    n = _layer_count(args, profile.num_layers)
    print(_describe(select_block(profile, n, args.strategy, seed=args.seed), profile.num_layers))


def _prune(args: argparse.Namespace) -> None:
    _check_new_dir(args.out)
    check_writable(args.out, directory=True)
    _check_size(args)
    saved = None if args.profile is None else DistanceProfile.load(args.profile)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    count = num_layers(model)
    n = _layer_count(args, count)
    if saved is not None and saved.num_layers != count:
        raise InvalidInputError(f"--profile {args.profile} is of a {saved.num_layers}-layer model, not {count}")
    if saved is not None and saved.model_identity != model_identity(model):
        print(f"warning: --profile {args.profile} was measured on different weights", file=sys.stderr)
    if saved is None and get_strategy(args.strategy).ranks_by is None:
        selection = profile_free_block(count, n, args.strategy, seed=args.seed)
    else:
        profile = saved if saved is not None else _measure(args, model, tokenizer)
        selection = select_block(profile, n, args.strategy, seed=args.seed)
    pruned = prune(model, selection.layers, inplace=True, strategy=args.strategy)
    with atomic_dir(args.out) as tmp:
        pruned.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"{_describe(selection, count)}\nwrote {args.out}: {count - selection.n} layers")


def _measure(args: argparse.Namespace, model, tokenizer) -> DistanceProfile:
    blocks = corpus_blocks(
        tokenizer, args.corpus, block_size=args.block_size, max_blocks={"profile": args.max_blocks}, splits=("profile",)
    )
    return profile_distances(model, blocks["profile"], token=args.token, metric=args.metric, batch_size=args.batch_size)


def _layer_count(args: argparse.Namespace, num_layers: int) -> int:
    """--n, or --fraction of the model's layers; in 1..L-1 either way."""
    n = args.n if args.fraction is None else layers_for_fraction(num_layers, args.fraction)
    if not 1 <= n <= num_layers - 1:
        given = f"--n {args.n}" if args.fraction is None else f"--fraction {args.fraction} ({n} layers)"
        raise InvalidInputError(f"{given}: remove 1..{num_layers - 1} of the model's {num_layers} layers")
    return n


def _check_size(args: argparse.Namespace) -> None:
    """Refuse a --n below 1 or a --fraction outside [0, 1) before any model is loaded."""
    if args.fraction is not None:
        layers_for_fraction(1, args.fraction)
    elif args.n < 1:
        raise InvalidInputError(f"--n {args.n}: remove at least one layer")


def _check_new_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidInputError(f"--out {path} already exists; name a new directory (or remove it first)")


def _describe(selection: BlockSelection, num_layers: int) -> str:
    """One line: the strategy, the layers, and the distance it rests on."""
    layers = " ".join(map(str, selection.layers))
    text = f"{selection.strategy}: remove layers {layers} ({selection.n} of {num_layers})"
    if selection.distance is None:
        return text
    if selection.start is None:
        return f"{text}; sum of single-layer distances {selection.distance:.4f}"
    return f"{text}; D[{selection.n}, {selection.start}] = {selection.distance:.4f}"
