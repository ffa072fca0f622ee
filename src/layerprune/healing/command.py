"""The `layerprune heal` and `layerprune merge` commands (also run as ``python -m layerprune.healing.distributed``):
QLoRA healing of a (pruned) model, and merging the adapter.

``heal --out DIR`` writes ``DIR/adapter`` (the LoRA adapter), ``DIR/heal.json`` (settings, losses, held-out
loss, throughput), ``DIR/checkpoints`` (rerunning the same command resumes there) and, with ``--merge``,
``DIR/merged`` (a plain full-precision model with tokenizer and model card).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cache import atomic_dir, check_writable, write_json_atomic
from ..data import corpus_blocks
from ..errors import InvalidInputError
from ..models import QUANTIZATIONS, load_tokenizer, resolve_source

PRESETS = ("cpu", "llama-2-7b", "llama-2-13b", "llama-2-70b", "mistral-7b", "phi-2", "other")


def add_heal_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `layerprune heal` (shared with ``python -m layerprune.healing.distributed``)."""
    parser.add_argument("--model", required=True, help="a (pruned) model directory, an embedded name or a hub id")
    parser.add_argument("--corpus", default="sotu", help="'sotu' (embedded) or a .txt file or folder of them")
    parser.add_argument("--out", type=Path, required=True, help="directory for the adapter, log and checkpoints")
    parser.add_argument(
        "--preset",
        choices=PRESETS,
        default="cpu",
        help="budget: 'cpu' (a few minutes on a laptop) or the paper's settings for a model (default: cpu)",
    )
    parser.add_argument("--rank", type=int, help="LoRA rank (default: the preset's)")
    parser.add_argument("--alpha", type=float, help="LoRA alpha (default: the rank, as in the paper)")
    parser.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default: 0.05)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="blocks per forward pass (default: the preset's)")
    parser.add_argument("--grad-accum", type=int, help="forward passes per optimizer step (default: the preset's)")
    parser.add_argument("--warmup", type=int, help="warm-up steps (default: the preset's)")
    parser.add_argument(
        "--quantization", choices=[*QUANTIZATIONS, "none"], help="base weights: 4bit (QLoRA), 8bit or none"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, LoRA init and dropout")
    parser.add_argument("--block-size", type=int, default=128, help="tokens per training block (default: 128)")
    parser.add_argument("--max-train-blocks", type=int, help="use at most this many training blocks")
    parser.add_argument("--eval-blocks", type=int, default=32, help="held-out blocks scored before/after (0: none)")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints (default: 50)")
    parser.add_argument("--merge", action="store_true", help="also save a merged full-precision model in OUT/merged")


def run_heal(args: argparse.Namespace) -> None:
    from .parallel import Processes
    from .training import heal

    settings = _preset_settings(args)
    check_writable(args.out, directory=True)
    tokenizer = load_tokenizer(resolve_source(args.model))
    blocks = corpus_blocks(
        tokenizer,
        args.corpus,
        block_size=args.block_size,
        max_blocks={"heal": args.max_train_blocks, "heldout": args.eval_blocks or None},
    )
    result = heal(
        args.model,
        tokenizer,
        blocks["heal"],
        **settings,
        alpha=args.alpha,
        dropout=args.dropout,
        seed=args.seed,
        checkpoint_dir=args.out / "checkpoints",
        checkpoint_every=args.checkpoint_every,
        eval_blocks=blocks["heldout"] if args.eval_blocks else None,
        data_name=f"corpus {args.corpus!s} (heal split)",
    )
    if not Processes.current().main:
        return
    with atomic_dir(args.out / "adapter") as tmp:
        result.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    source = str(Path(args.model).resolve()) if Path(args.model).exists() else str(args.model)
    write_json_atomic(args.out / "heal.json", {"model": source, **result.summary()})
    _report(result, args.out)
    if args.merge:
        _save_merged(result.model, tokenizer, args.out / "merged")


def run_merge(args: argparse.Namespace) -> None:
    from peft import PeftModel

    from .parallel import Processes
    from .training import load_base

    log = args.heal_dir / "heal.json"
    if not log.is_file():
        raise InvalidInputError(f"{args.heal_dir} holds no heal.json: is it the --out directory of `layerprune heal`?")
    check_writable(args.out or args.heal_dir / "merged", directory=True)
    try:
        summary = json.loads(log.read_text())
        healing, source = summary["healing"], summary["model"]
        quantization = None if healing["quantization"] == "none" else healing["quantization"]
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(
            f"{log} is damaged ({type(error).__name__}: {error}); run `layerprune heal` again to rewrite it"
        ) from None
    base = load_base(source, quantization, Processes.current().device)
    base.config.layerprune = {**(getattr(base.config, "layerprune", None) or {}), "healing": healing}
    model = PeftModel.from_pretrained(base, args.heal_dir / "adapter")
    _save_merged(model, load_tokenizer(str(args.heal_dir / "adapter")), args.out or args.heal_dir / "merged")


def _preset_settings(args: argparse.Namespace) -> dict:
    """The preset's rank, lr, steps, batch, warm-up and quantization, overridden by the options given."""
    from .settings import CPU_DEFAULTS, PAPER_SETTINGS

    settings = (CPU_DEFAULTS if args.preset == "cpu" else PAPER_SETTINGS[args.preset]).as_kwargs()
    for key in ("rank", "lr", "steps", "batch_size", "grad_accum", "warmup", "quantization"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if settings["quantization"] == "none":
        settings["quantization"] = None
    return settings


def _report(result, out: Path) -> None:
    print(f"healed {result.record['steps']} steps: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}")
    if result.heldout_before is not None:
        print(f"held-out loss {result.heldout_before.loss:.4f} -> {result.heldout_after.loss:.4f}")
    print(f"{result.tokens:,} tokens in {result.seconds:.1f} s ({result.tokens_per_second:.1f} tokens/s)")
    print(f"wrote {out / 'adapter'} and {out / 'heal.json'}")


def _save_merged(model, tokenizer, directory: Path) -> None:
    from .merging import merge, save_merged

    save_merged(merge(model), directory, tokenizer)
    print(f"wrote merged model {directory}")
