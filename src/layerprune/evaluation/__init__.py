"""Evaluation: question answering through lm-eval on the embedded benchmarks (`harness`, `tasks`) and greedy
generation (`generation`). lm-eval loads on first use of `evaluate`."""

from .._lazy import lazy_attributes

_NAMES = {
    "evaluate": "harness",
    "EvalResults": "harness",
    "DEFAULT_LIMITS": "tasks",
    "TASKS": "tasks",
    "TaskSpec": "tasks",
    "resolve_tasks": "tasks",
    "task_configs": "tasks",
    "write_task_configs": "tasks",
    "greedy_generate": "generation",
    "bleu": "generation",
}
__getattr__ = lazy_attributes(__name__, ("generation", "harness", "tasks"), _NAMES)
__all__ = sorted(_NAMES)
