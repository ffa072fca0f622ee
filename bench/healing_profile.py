"""Where a healing step's time goes: `torch.profiler` over a few plain-LoRA steps (as the default book heals) of the
model pruned by its similarity block, after one step to warm up; each operator's share of the CPU time, largest
first. On SmolLM2 the matrix products take about a quarter of a step: the rest (LoRA's dropout masks, the
attention's backward, elementwise products and dtype copies, the log-softmax) sets the wall time of the small
model's healing, not the matmul rate."""

from __future__ import annotations

import _common
from torch.profiler import ProfilerActivity, profile

import layerprune as lp
from layerprune.speed import Report


def main() -> None:
    parser = _common.parser(__doc__, threads=0)  # every core, as the book heals
    parser.add_argument("--steps", type=int, default=3, help="profiled optimizer steps (default 3)")
    parser.add_argument("--fraction", type=float, default=0.25, help="fraction of layers removed (default 0.25)")
    parser.add_argument("--top", type=int, default=10, help="operators listed (default 10)")
    _common.size_options(parser, batch_size=4, batch_help="blocks per step", repeats=1)
    args = parser.parse_args()
    _common.start(args, f"healing profile ({args.model})")
    model, tokenizer = lp.load_model(args.model)
    blocks = lp.corpus_blocks(
        tokenizer, "sotu", block_size=args.block_size, seed=args.seed,
        max_blocks={"profile": 16, "heal": 64}, splits=("profile", "heal"),
    )  # fmt: skip
    distances = lp.profile_distances(model, blocks["profile"], progress=False)
    chosen = lp.select_block(distances, lp.layers_for_fraction(distances.num_layers, args.fraction))
    pruned = lp.prune(model, chosen.layers)
    settings = dict(quantization=None, batch_size=args.batch_size, rank=8, warmup=1, seed=args.seed, progress=False)
    lp.heal(pruned, tokenizer, blocks["heal"], steps=1, **settings)  # warm-up: first-call allocations and kernels
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        healed = lp.heal(pruned, tokenizer, blocks["heal"], steps=args.steps, **settings)
    events = sorted(profiled.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    rows = [
        {"operator": event.key, "share of CPU time": event.self_cpu_time_total / total, "calls": event.count}
        for event in events[: args.top]
    ]
    _common.show(
        Report(
            f"healing profile: {args.model} without layers {list(chosen.layers)}, {args.steps} steps of "
            f"{args.batch_size} x {args.block_size} tokens, {healed.seconds / args.steps:.2f} s a step",
            rows,
        )
    )


if __name__ == "__main__":
    main()
