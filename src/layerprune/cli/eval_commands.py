"""`layerprune evaluate` and `layerprune tasks`: benchmark accuracy, and lm-eval task configs for `lm_eval`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..assets import DEFAULT_MODEL
from ..cache import check_writable, write_json_atomic
from ..evaluation import tasks
from .method_commands import add_dtype_option


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("evaluate", help="accuracy on the embedded benchmarks through lm-eval (cached)")
    run.add_argument("--model", default=DEFAULT_MODEL, help=f"embedded model name or model directory ({DEFAULT_MODEL})")
    _add_task_arguments(run)
    run.add_argument("--batch-size", type=int, default=8, help="lm-eval batch size (default: 8)")
    run.add_argument("--device", help="'cpu' or 'cuda' (default: CUDA when available)")
    add_dtype_option(run)
    run.add_argument("--no-cache", action="store_true", help="evaluate even if the result is cached")
    run.add_argument("--out", type=Path, help="also write the table's rows to this JSON file")
    run.set_defaults(run=_evaluate)
    configs = commands.add_parser("tasks", help="write the lm-eval task YAMLs, for `lm_eval --include_path DIR`")
    configs.add_argument("--out", type=Path, required=True, help="directory to write the YAML files into")
    _add_task_arguments(configs)
    configs.set_defaults(run=_write_configs)


def _add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        default=",".join(tasks.TASK_NAMES),
        help=f"comma-separated tasks (default: all): {','.join(tasks.TASK_NAMES)}",
    )
    parser.add_argument(
        "--limit",
        type=_limit,
        help="questions per task (MMLU: spread evenly over its 57 subjects), or 'default' for "
        f"{tasks.DEFAULT_LIMITS}; omitted: every question",
    )
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: MMLU 5, the others 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the question subsample (default: 0)")


def _limit(text: str) -> int | dict[str, int | None]:
    if text == "default":
        return dict(tasks.DEFAULT_LIMITS)
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of questions or 'default', got {text!r}") from None


def _evaluate(args: argparse.Namespace) -> None:
    from ..evaluation import harness
    from ..models import load_model

    names, _ = harness.check_arguments(args.tasks, args.limit, args.num_fewshot, args.seed, args.batch_size)
    if args.out:
        check_writable(args.out)
    model, tokenizer = load_model(args.model, dtype=args.dtype, device=args.device)
    results = harness.evaluate(
        model,
        tokenizer,
        names,
        num_fewshot=args.num_fewshot,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        cache=not args.no_cache,
    )
    print(results.to_markdown())
    if args.out:
        write_json_atomic(args.out, {"model": str(args.model), "rows": results.rows})
        print(f"wrote {args.out}")


def _write_configs(args: argparse.Namespace) -> None:
    check_writable(args.out, directory=True)
    names = tasks.write_task_configs(
        args.out, args.tasks, limit=args.limit, seed=args.seed, num_fewshot=args.num_fewshot
    )
    print(f"wrote lm-eval task configs to {args.out}; run them with:")
    print(
        f"lm_eval --model hf --model_args pretrained=MODEL_DIR --device cpu "
        f"--include_path {args.out.resolve()} --tasks {','.join(names)}"
    )
