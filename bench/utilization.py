"""How much of this machine the method uses: the matmul rate in the model's dtype, then the FLOP rate of a scoring
pass (as a sweep scores each pruned model) and of plain-LoRA healing steps (as the default book heals, in a fresh
process), each as a share of that rate (goal >= 0.5). The book's work at the measured rate sets a floor on its
wall time: tokens x FLOPs per token / rate (printed per million tokens)."""

from __future__ import annotations

import _common

import layerprune as lp
from layerprune import speed
from layerprune.speed import utilization


def main() -> None:
    parser = _common.parser(__doc__, threads=0)  # every core, as the book runs
    _common.size_options(parser, batch_size=8, batch_help="blocks per scoring batch", repeats=1)
    parser.add_argument("--blocks", type=int, default=16, help="held-out blocks scored (default 16)")
    parser.add_argument("--steps", type=int, default=3, help="healing steps (default 3)")
    args = parser.parse_args()
    _common.start(args, f"utilization ({args.model})")
    model, tokenizer = lp.load_model(args.model)
    dtype, device = next(model.parameters()).dtype, lp.adapters.model_device(model)
    rate = utilization.matmul_rate(dtype, device)
    blocks = speed.corpus_tokens(tokenizer, "heldout", args.blocks, args.block_size, args.seed, "sotu")
    scoring = utilization.scoring_rate(model, blocks, batch_size=args.batch_size)
    forward = utilization.flops_per_token(model, args.block_size)
    del model  # the healing run loads its own copy in a fresh process
    healing = speed.in_subprocess(
        "healing_run", model=args.model, quantization=None, steps=args.steps, batch_size=4,
        block_size=args.block_size, seed=args.seed,
    )  # fmt: skip
    _common.show(utilization.utilization_report(forward, scoring, healing, args.block_size, rate, str(dtype)))
    print(
        f"floor per million tokens scored: {1e6 * forward / rate:.1f} s at the matmul rate, "
        f"{1e6 / scoring['tokens/s']:.1f} s as measured",
        flush=True,
    )


if __name__ == "__main__":
    main()
