"""Evaluation: question answering through lm-eval on the embedded benchmarks (`harness`, `tasks`; `scoring`:
the LM head only where a continuation is scored) and greedy generation (`generation`). lm-eval loads on first use
of `evaluate`."""

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
    "ContinuationHFLM": "scoring",
    "stock_scoring": "scoring",
    "greedy_generate": "generation",
    "bleu": "generation",
}
__getattr__ = lazy_attributes(__name__, ("generation", "harness", "scoring", "tasks"), _NAMES)
__all__ = sorted(_NAMES)
