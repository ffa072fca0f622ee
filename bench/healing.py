"""Healing: training tokens/s and peak memory of a few QLoRA steps on a 4-bit or 8-bit base and of plain LoRA on
the full-precision base, each in its own fresh process (so each peak is its own)."""

from __future__ import annotations

import _common

from layerprune import speed


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps (default 3)")
    _common.size_options(parser, batch_size=2, batch_help="blocks per step", repeats=1)
    parser.add_argument(
        "--quantizations", default="4bit,8bit,none", help="comma-separated: 4bit, 8bit, none (default all three)"
    )
    args = parser.parse_args()
    _common.start(args, "healing")
    quantizations = [None if q == "none" else q for q in args.quantizations.split(",")]
    report = speed.healing_speed(
        args.model,
        quantizations=quantizations,
        steps=args.steps,
        batch_size=args.batch_size,
        block_size=args.block_size,
        repeats=args.repeats,
        seed=args.seed,
    )
    _common.show(report)


if __name__ == "__main__":
    main()
