"""Profiling cost: profile_distances (every block size n in one pass) against a plain forward pass over the same
blocks, and against the existing tools' way (output_hidden_states=True, one pass per n): time and peak memory."""

from __future__ import annotations

import _common

import layerprune as lp
from layerprune import speed


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--blocks", type=int, default=16, help="profile blocks (default 16)")
    _common.size_options(parser, batch_size=8, batch_help="blocks per forward pass", repeats=3)
    parser.add_argument(
        "--baseline-passes",
        type=int,
        default=1,
        help="block sizes n the one-pass-per-n baseline runs per round, its time scaled to all L "
        "(every pass costs the same; default 1, 0 = run all L passes)",
    )
    args = parser.parse_args()
    _common.start(args, "profiling")
    model, tokenizer = lp.load_model(args.model)
    blocks = speed.corpus_tokens(tokenizer, "profile", args.blocks, args.block_size, args.seed)
    timing = speed.profiling_speed(
        model,
        blocks,
        batch_size=args.batch_size,
        repeats=args.repeats,
        baseline_passes=args.baseline_passes or None,
    )
    _common.show(timing)
    del model
    memory = speed.profiling_memory(
        args.model, block_size=args.block_size, count=args.blocks, batch_size=args.batch_size, seed=args.seed
    )
    _common.show(memory)


if __name__ == "__main__":
    main()
