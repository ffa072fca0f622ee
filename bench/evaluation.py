"""Evaluation: lm-eval throughput (layerprune.evaluation.evaluate, cache off) next to a raw forward pass over
exactly the batches lm-eval gave the model."""

from __future__ import annotations

import _common

import layerprune as lp
from layerprune import speed


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--task", default="arc_easy", help="task (default arc_easy)")
    parser.add_argument("--limit", type=int, default=20, help="questions (default 20)")
    _common.size_options(parser, batch_size=8, batch_help="lm-eval batch size", repeats=2, block_size=None)
    args = parser.parse_args()
    _common.start(args, "evaluation")
    model, tokenizer = lp.load_model(args.model)
    report = speed.evaluation_speed(
        model, tokenizer, task=args.task, limit=args.limit, batch_size=args.batch_size, repeats=args.repeats
    )
    _common.show(report)


if __name__ == "__main__":
    main()
