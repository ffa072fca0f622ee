"""Pruned inference: prefill and greedy-decoding tokens/s (KV cache on) with 0, 25% and 50% of the layers
removed, and each speedup's efficiency against the ideal one (from the removed layers' share of the time)."""

from __future__ import annotations

import _common

import layerprune as lp
from layerprune import speed


def main() -> None:
    parser = _common.parser(__doc__)
    _common.size_options(parser, batch_size=1, batch_help="sequences generated together", repeats=5, block_size=None)
    parser.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (default 128)")
    parser.add_argument("--new-tokens", type=int, default=32, help="greedy tokens decoded (default 32)")
    parser.add_argument("--fractions", type=_common.fractions, default=[0.0, 0.25, 0.5], help="default 0,0.25,0.5")
    parser.add_argument(
        "--strategy",
        choices=("similarity", "last"),
        default="similarity",
        help="which block to remove: the paper's most similar one (from a small profile) or the last layers",
    )
    parser.add_argument("--profile-blocks", type=int, default=16, help="blocks for the profile (default 16)")
    args = parser.parse_args()
    _common.start(args, "pruned inference")
    model, tokenizer = lp.load_model(args.model)
    prompt = speed.corpus_tokens(tokenizer, "heldout", args.batch_size, args.prompt_tokens, args.seed)
    profile = None
    if args.strategy == "similarity":
        blocks = speed.corpus_tokens(tokenizer, "profile", args.profile_blocks, args.prompt_tokens, args.seed)
        profile = lp.profile_distances(model, blocks, progress=False)
    report = speed.inference_speed(
        model,
        prompt,
        new_tokens=args.new_tokens,
        fractions=args.fractions,
        profile=profile,
        repeats=args.repeats,
        seed=args.seed,
    )
    _common.show(report)


if __name__ == "__main__":
    main()
