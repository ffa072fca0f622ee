"""bfloat16 against float32: the time of a forward pass, the all-n profile, QLoRA healing steps and an lm-eval
pass in each dtype, side by side, with each dtype's memory; then what bf16 changes on the same inputs: the
profile D[n, l], the chosen blocks l*(n), the held-out loss and the answers to ARC-Easy (with McNemar's test)."""

from __future__ import annotations

import _common

from layerprune import speed

PARTS = ("speed", "agreement")


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--blocks", type=int, default=8, help="blocks for the forward pass and profile (default 8)")
    _common.size_options(parser, batch_size=8, batch_help="blocks per forward pass, lm-eval batch size", repeats=3)
    parser.add_argument("--heal-steps", type=int, default=3, help="QLoRA steps per run (default 3)")
    parser.add_argument("--heal-batch-size", type=int, default=2, help="blocks per QLoRA step (default 2)")
    parser.add_argument("--questions", type=int, default=40, help="ARC-Easy questions timed (default 40)")
    parser.add_argument("--profile-blocks", type=int, default=64, help="blocks profiled for agreement (default 64)")
    parser.add_argument("--heldout-blocks", type=int, default=32, help="held-out blocks for agreement (default 32)")
    parser.add_argument(
        "--arc-questions", type=int, default=0, help="ARC-Easy questions for agreement (default 0 = all 570)"
    )
    parser.add_argument("--only", choices=PARTS, help="run one part (default both)")
    args = parser.parse_args()
    _common.start(args, "precision")
    if args.only in (None, "speed"):
        timing = speed.precision_speed(
            args.model,
            blocks=args.blocks,
            block_size=args.block_size,
            batch_size=args.batch_size,
            repeats=args.repeats,
            threads=args.threads,
            heal_steps=args.heal_steps,
            heal_batch_size=args.heal_batch_size,
            questions=args.questions,
            seed=args.seed,
        )
        _common.show(timing)
    if args.only in (None, "agreement"):
        rows = speed.precision_agreement(
            args.model,
            profile_blocks=args.profile_blocks,
            heldout_blocks=args.heldout_blocks,
            arc_questions=args.arc_questions or None,
            seed=args.seed,
            block_size=args.block_size,
            batch_size=args.batch_size,
        )
        title = (
            f"bfloat16 against float32 on the same inputs: {args.model}, {args.profile_blocks} profile and "
            f"{args.heldout_blocks} held-out blocks of {args.block_size} tokens"
        )
        _common.show(speed.Report(title, [row | {"value": f"{row['value']:.4g}"} for row in rows]))


if __name__ == "__main__":
    main()
