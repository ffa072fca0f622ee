"""A pruning sweep (held-out loss and lm-eval accuracy of the pruned models, `study.sweep`) with shared
prefixes, where each pruned model starts from the unpruned model's state at its block, against the same sweep
running every layer of every model; each round in an empty cache, so that both compute everything. The two must
give identical rows."""

from __future__ import annotations

import os
import tempfile

import _common

import layerprune as lp
from layerprune.adapters import model_device
from layerprune.cache import CACHE_ENV
from layerprune.speed import Check, Report, paired_ratio, rounds, timed
from layerprune.study import sweeps as grid
from layerprune.study.steps import cached_profile


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--task", default="arc_easy", help="lm-eval task (default arc_easy)")
    parser.add_argument("--limit", type=int, default=40, help="questions (default 40)")
    parser.add_argument("--fractions", type=_common.fractions, default="0,0.1,0.2,0.3", help="(default 0,0.1,0.2,0.3)")
    parser.add_argument("--heldout-blocks", type=int, default=16, help="held-out blocks (default 16)")
    _common.size_options(parser, batch_size=8, batch_help="batch size", repeats=2)
    args = parser.parse_args()
    _common.start(args, "sweep")
    model, tokenizer = lp.load_model(args.model)
    blocks = lp.corpus_blocks(
        tokenizer, "sotu", block_size=args.block_size, seed=args.seed,
        max_blocks={"profile": 16, "heldout": args.heldout_blocks},
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_ENV] = tmp
        profile = cached_profile(model, blocks["profile"], batch_size=args.batch_size, progress=False)
    rows: dict[bool, list[list[dict]]] = {True: [], False: []}

    def run(share: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ[CACHE_ENV] = tmp
            result = grid.sweep(
                model, tokenizer, profile, blocks, fractions=args.fractions, strategies=["similarity", "last"],
                tasks=[args.task], limits={args.task: args.limit}, seed=args.seed, batch_size=args.batch_size,
                share_prefixes=share,
            )  # fmt: skip
        rows[share].append(result.rows)

    device = model_device(model)
    times = rounds({"shared": timed(lambda: run(True), device), "every layer": timed(lambda: run(False), device)},
                   args.repeats)  # fmt: skip
    same = all(shared == alone for shared in rows[True] for alone in rows[False])
    ratio = paired_ratio(times["every layer"], times["shared"])
    report = Report(
        f"sweep: {args.model}, fractions {args.fractions} x (similarity, last), {args.heldout_blocks} held-out "
        f"blocks, {args.limit} {args.task} questions, {args.repeats} round(s)",
        [
            {"sweep": name, "best seconds": min(values), "rounds": ", ".join(f"{v:.1f}" for v in values)}
            for name, values in times.items()
        ],
        [
            Check("every layer / shared time", ratio, 1.0, higher_is_better=True),
            Check("rows identical (1 = yes)", float(same), 1.0, higher_is_better=True),
        ],
    )
    _common.show(report)


if __name__ == "__main__":
    main()
