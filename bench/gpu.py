"""The profiling and pruned-inference tables on a GPU, for a model of Llama-2-7B's shape (hidden 4096, 32 layers,
32 heads, intermediate 11008, vocabulary 32000) with random weights built in place (no download): in bfloat16,
then in 4-bit (bitsandbytes NF4, bfloat16 compute). Random weights and random token ids cost exactly what trained
ones and text do; the pruned block is the last layers before the final one (a profile of a random model would
pick an arbitrary block of the same size, which costs the same).

  python bench/gpu.py                              # a CUDA machine: 7B shape, bf16 and 4-bit (~10 minutes)
  python bench/gpu.py --dry-run                    # print the plan (the model built on the meta device)
  python bench/gpu.py --shape tiny --device cpu    # the whole code path on a tiny model, on a CPU
"""

from __future__ import annotations

import argparse
import gc
import sys

import _common
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedModel

from layerprune import speed
from layerprune.healing import load_base

SHAPES: dict[str, dict[str, int | float]] = {
    "7b": {
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "intermediate_size": 172,
        "vocab_size": 320,
        "max_position_embeddings": 512,
    },
}
SETTINGS: dict[str, dict[str, int]] = {
    "7b": {
        "blocks": 32,
        "block_size": 512,
        "batch_size": 8,
        "prompt_tokens": 512,
        "new_tokens": 64,
        "repeats": 3,
        "baseline_passes": 0,
    },
    "tiny": {
        "blocks": 8,
        "block_size": 32,
        "batch_size": 4,
        "prompt_tokens": 16,
        "new_tokens": 4,
        "repeats": 1,
        "baseline_passes": 0,
    },
}
PRECISIONS = ("bf16", "4bit")


def build(shape: str, device: torch.device, dtype: torch.dtype, seed: int) -> PreTrainedModel:
    """A seeded random Llama of `shape`, created directly on `device` (on "meta" no weight is allocated)."""
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPES[shape]), dtype=dtype)
    return model.eval()


def random_tokens(count: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    """[count, length] seeded random token ids (on the CPU; the benchmarks move each batch)."""
    return torch.randint(vocab, (count, length), generator=torch.Generator().manual_seed(seed))


def parse() -> argparse.Namespace:
    parser = _common.parser(__doc__, model_option=False)
    parser.add_argument("--shape", choices=SHAPES, default="7b", help="model shape (default 7b)")
    parser.add_argument("--device", help="cuda (the default where there is one) or cpu")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated: bf16, 4bit")
    parser.add_argument("--fractions", type=_common.fractions, default=[0.0, 0.25, 0.5], help="default 0,0.25,0.5")
    parser.add_argument("--dry-run", action="store_true", help="print the plan, build nothing real, run nothing")
    for name in SETTINGS["7b"]:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            help=f"default {SETTINGS['7b'][name]} (7b), {SETTINGS['tiny'][name]} (tiny)",
        )
    args = parser.parse_args()
    for name, value in SETTINGS[args.shape].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def device_of(args: argparse.Namespace) -> torch.device:
    if args.device:
        return torch.device(args.device)
    if not torch.cuda.is_available():
        sys.exit("no CUDA device here: use --dry-run, or --shape tiny --device cpu to run the code path on a CPU")
    return torch.device("cuda")


def show_plan(args: argparse.Namespace) -> None:
    """What a run would measure, with the model's size from a build on the meta device."""
    model = build(args.shape, torch.device("meta"), torch.bfloat16, args.seed)
    total = sum(p.numel() for p in model.parameters())
    linear = sum(p.numel() for name, p in model.named_parameters() if ".layers." in name and p.dim() == 2)
    print(f"model: Llama, {args.shape} shape {SHAPES[args.shape]}")
    print(f"parameters: {total / 1e9:.3f} B; bf16 weights {total * 2 / 2**30:.2f} GiB; 4-bit NF4 about ", end="")
    print(f"{(linear * 0.5 + (total - linear) * 2) / 2**30:.2f} GiB (decoder linears in 4 bits, the rest bf16)")
    print(
        f"profiling: {args.blocks} random blocks x {args.block_size} tokens, batch {args.batch_size}, "
        f"{args.repeats} rounds, one-pass-per-n baseline: {args.baseline_passes or 'all'} passes per round"
    )
    print(
        f"inference: batch {args.batch_size} x {args.prompt_tokens} prompt tokens, {args.new_tokens} new tokens, "
        f"fractions {args.fractions}, last-layers block"
    )
    print(f"precisions: {args.precisions}; tables: profiling speed, profiling peak memory, pruned inference")


def measure(model: PreTrainedModel, label: str, args: argparse.Namespace) -> None:
    """The profiling, memory and inference tables for one model."""
    print(f"## {label}", flush=True)
    vocab = model.config.vocab_size
    blocks = random_tokens(args.blocks, args.block_size, vocab, args.seed)
    prompt = random_tokens(args.batch_size, args.prompt_tokens, vocab, args.seed + 1)
    timing = speed.profiling_speed(
        model, blocks, batch_size=args.batch_size, repeats=args.repeats, baseline_passes=args.baseline_passes or None
    )
    _common.show(timing)
    rows = [speed.variant_memory(model, blocks, v, args.batch_size) for v in speed.PROFILE_VARIANTS]
    _common.show(speed.memory_report(rows, f"profiling peak memory ({label})"))
    inference = speed.inference_speed(
        model, prompt, new_tokens=args.new_tokens, fractions=args.fractions, repeats=args.repeats, seed=args.seed
    )
    _common.show(inference)


def main() -> None:
    args = parse()
    _common.start(args, f"GPU bench: random Llama, {args.shape} shape")
    if args.dry_run:
        show_plan(args)
        return
    device = device_of(args)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(args.shape, device, dtype, args.seed)
    precisions = args.precisions.split(",")
    if "bf16" in precisions:
        measure(model, "bf16" if device.type == "cuda" else "float32 (bf16 on CUDA)", args)
    if "4bit" in precisions:
        quantized = load_base(model, "4bit", device)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        measure(quantized, "4-bit NF4", args)


if __name__ == "__main__":
    main()
