"""Memory: the peak resident memory of each step of the method (load the model, prune it, make the pruned copy's
healing base, heal it for a few steps, measure its held-out loss), each step in a fresh process, as a multiple of
the model's weight bytes; the goal is that no step holds more than about twice the weights."""

from __future__ import annotations

import _common

from layerprune import speed


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--fraction", type=float, default=0.25, help="fraction of the layers pruned (default 0.25)")
    parser.add_argument(
        "--quantization", default="4bit", help="the healing base: 4bit, 8bit or none (default 4bit, as the book)"
    )
    parser.add_argument("--heal-steps", type=int, default=2, help="healing steps (default 2)")
    parser.add_argument("--batch-size", type=int, default=2, help="blocks per step and per batch (default 2)")
    parser.add_argument("--block-size", type=int, default=128, help="tokens per block (default 128)")
    parser.add_argument(
        "--steps", default=",".join(speed.STEPS), help=f"comma-separated steps (default {','.join(speed.STEPS)})"
    )
    args = parser.parse_args()
    _common.start(args, "memory")
    report = speed.step_memory(
        args.model,
        fraction=args.fraction,
        quantization=None if args.quantization == "none" else args.quantization,
        heal_steps=args.heal_steps,
        batch_size=args.batch_size,
        block_size=args.block_size,
        seed=args.seed,
        steps=tuple(args.steps.split(",")),
    )
    _common.show(report)


if __name__ == "__main__":
    main()
