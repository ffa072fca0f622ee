"""Evaluation: lm-eval throughput (layerprune.evaluation.evaluate, cache off) next to a raw forward pass over
exactly the batches lm-eval gave the model; then one MMLU pass scored as lm-eval's HFLM does (LM head and
log-softmax at every position, a pass per context and continuation) against evaluate's scoring (each context once,
the head only at the continuation positions), side by side in one run, with the check that every question gets the
same score and, with --float32-reference, each scoring's distance from the model's float32 scores."""

from __future__ import annotations

import _common

import layerprune as lp
from layerprune import speed


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--task", default="arc_easy", help="task of the throughput comparison (default arc_easy)")
    parser.add_argument("--limit", type=int, default=20, help="questions of the throughput comparison (default 20)")
    parser.add_argument(
        "--scoring-task", default="mmlu", help="task of the before/after scoring comparison (default mmlu)"
    )
    parser.add_argument(
        "--scoring-limit", type=int, default=57, help="its questions (default 57: one per MMLU subject)"
    )
    parser.add_argument("--only-scoring", action="store_true", help="run the scoring comparison alone")
    parser.add_argument(
        "--float32-reference",
        action="store_true",
        help="also score the questions with the model in float32 (loaded and freed first) and give each scoring's "
        "distance from it",
    )
    _common.size_options(parser, batch_size=8, batch_help="lm-eval batch size", repeats=2, block_size=None)
    args = parser.parse_args()
    _common.start(args, "evaluation")
    reference = None
    if args.float32_reference:
        reference = speed.float32_reference(args.model, args.scoring_task, args.scoring_limit, args.batch_size)
    model, tokenizer = lp.load_model(args.model)
    if not args.only_scoring:
        report = speed.evaluation_speed(
            model, tokenizer, task=args.task, limit=args.limit, batch_size=args.batch_size, repeats=args.repeats
        )
        _common.show(report)
    report = speed.scoring_speed(
        model,
        tokenizer,
        task=args.scoring_task,
        limit=args.scoring_limit,
        batch_size=args.batch_size,
        repeats=args.repeats,
        reference=reference,
    )
    _common.show(report)


if __name__ == "__main__":
    main()
