"""Question-answering accuracy of in-memory models on the embedded benchmarks, through lm-eval, cached on disk.

`evaluate` runs lm-eval's ``HFLM`` on the model object itself (plain, pruned, PeftModel or bitsandbytes 4-bit)
with the task configurations of `layerprune.evaluation.tasks`. Results, with each question's score, are cached
per task (`layerprune.cache`, kind "evaluation"), keyed by the model's identity (weights, config and prune/heal
history), the task configuration and the data's content (never where the data or the cache lies), shot count,
limit and seed; a cache hit does not run the model. The model is scored by `scoring.ContinuationHFLM`: lm-eval's
HFLM with each context computed once for all its continuations and the LM head applied only where a continuation
token is scored (the same scores, up to float rounding). lm-eval's log messages are hidden unless the ``lm_eval``
logger has been given a level (``logging.getLogger("lm_eval").setLevel("INFO")``) or ``LMEVAL_LOG_LEVEL`` is set.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import datasets
import lm_eval
import lm_eval.api.model
import lm_eval.api.task
import torch
from lm_eval.evaluator import evaluate as lm_evaluate
from lm_eval.tasks import TaskManager
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..adapters import model_device
from ..cache import atomic_file, cached_batch, model_identity
from ..errors import InvalidInputError
from ..validation import check_int
from .scoring import ContinuationHFLM
from .tasks import TASKS, Limit, config_key, resolve_limits, resolve_tasks, shots_of, task_configs, write_configs

# 2: per-question scores stored beside the rows; 3: keyed by the data's content instead of its absolute folder,
# with each question's probability of the right answer stored too; 4: questions named by their row in the split;
# 5: the choices of a question scored in one packed pass (`scoring`: the same scores up to float rounding)
FORMAT_VERSION = 5
COLUMNS = ("task", "metric", "value", "stderr", "n", "shots", "chance", "headline")


@dataclass(frozen=True)
class EvalResults:
    """A tidy table: one row per task and metric, with columns `COLUMNS`.

    ``headline`` marks the metric to quote for each task, as in the usual zero-shot tables (and the Open LLM
    Leaderboard): ``acc_norm`` (log-likelihoods divided by the answer's length in characters) for ARC-Challenge
    and HellaSwag, ``acc`` for the others; both are listed where lm-eval reports both. ``chance`` is
    1 / number of choices; for BoolQ the majority class ("yes", 62% of the questions) is a higher bar than 0.5.
    ``stderr`` is lm-eval's; where it has none (MMLU subjects with one question each) it is the binomial
    sqrt(p (1 - p) / (n - 1)) over all ``n`` questions.
    """

    rows: list[dict[str, Any]]
    questions: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per task, each question's score on the headline metric (1.0 right, 0.0 wrong), by question id: the same
    ids for every model evaluated with the same limit and seed, so comparisons can be paired."""
    probabilities: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per task, each question's probability of the right answer among the choices, by the same question ids as
    `questions`: the softmax over the choices of the log-likelihoods lm-eval's ``acc`` compares (so ``acc`` is 1
    exactly where the right answer has the largest probability, ties aside). A graded per-question measure from
    the same model pass, for paired comparisons that 0/1 scores resolve only with many questions."""

    def headline(self) -> dict[str, float]:
        """The headline value of every task."""
        return {row["task"]: row["value"] for row in self.rows if row["headline"]}

    def to_markdown(self, digits: int = 3) -> str:
        """A Markdown table."""
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(_format(row[column], digits) for column in COLUMNS) + " |" for row in self.rows]
        return "\n".join(lines)

    def to_csv(self, path: str | Path | None = None) -> str:
        """The table as CSV text, also written to `path` when given."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        if path is not None:
            with atomic_file(Path(path)) as tmp:
                tmp.write_text(buffer.getvalue())
        return buffer.getvalue()


def _format(value: Any, digits: int) -> str:
    if value is None:
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def evaluate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: str | Iterable[str],
    *,
    num_fewshot: int | None = None,
    limit: Limit = None,
    seed: int = 0,
    batch_size: int = 8,
    cache: bool = True,
    progress: bool = True,
    identity: str | None = None,
    after: Limit = None,
) -> EvalResults:
    """Accuracy of `model` on `tasks` (names in `layerprune.evaluation.tasks.TASK_NAMES`, or a comma-separated string).

    `num_fewshot`: None = each task's default (MMLU 5-shot from its dev split, the others 0-shot).
    `limit`: questions per task, one int for all or a dict per task (e.g. `DEFAULT_LIMITS`); None = all. The
    subset is seeded by `seed` and, for MMLU, spread evenly over the 57 subjects (see `layerprune.evaluation.tasks`).
    `batch_size` does not enter the cache key: it changes speed, not (beyond float rounding) the results.
    `identity`: the model's `model_identity` when the caller already has it (hashing the weights is skipped).
    `after`: a smaller limit (one int or a dict per task, like `limit`): only the questions `limit` adds to it are
    scored, so that a subset can be scored in two parts, each in the batches it would have alone; for tasks whose
    prompts do not depend on the subset (`tasks.questions_independent`).
    """
    names, limits = check_arguments(tasks, limit, num_fewshot, seed, batch_size)
    afters = dict.fromkeys(names) if after is None else resolve_limits(after, names)
    _check_model(model, tokenizer)
    configs = {
        name: task_configs(name, limit=limits[name], seed=seed, num_fewshot=num_fewshot, after=afters[name])
        for name in names
    }

    def run(missing: list[str]) -> dict[str, dict[str, Any]]:
        return _run(model, tokenizer, {name: configs[name] for name in missing}, seed, batch_size, progress)

    if cache:
        identity = identity or model_identity(model)
        keys = {
            name: _cache_key(
                identity, name, configs[name], shots_of(name, num_fewshot), (limits[name], afters[name]), seed
            )
            for name in names
        }
        scored = cached_batch("evaluation", keys, run, encode=lambda value: value, decode=_checked)
    else:
        scored = run(names)
    return EvalResults(
        [row for name in names for row in scored[name]["rows"]],
        {name: scored[name]["questions"] for name in names},
        {name: scored[name]["probabilities"] for name in names},
    )


def check_arguments(
    tasks: str | Iterable[str], limit: Limit, num_fewshot: int | None, seed: int, batch_size: int
) -> tuple[list[str], dict[str, int | None]]:
    """Task names and per-task limits, after checking every argument of `evaluate` but the model."""
    names = resolve_tasks(tasks)
    limits = resolve_limits(limit, names)
    check_int("num_fewshot", num_fewshot, 0, optional=True)
    check_int("seed", seed, 0)
    check_int("batch_size", batch_size, 1)
    return names, limits


def _check_model(model: object, tokenizer: object) -> None:
    if not isinstance(model, nn.Module) or getattr(model, "config", None) is None:
        raise InvalidInputError(f"model must be a transformers causal LM (or a PeftModel), got {type(model).__name__}")
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise InvalidInputError(f"tokenizer must be a transformers tokenizer, got {type(tokenizer).__name__}")


def _cache_key(
    identity: str, name: str, configs: dict, shots: int, limits: tuple[int | None, int | None], seed: int
) -> dict[str, Any]:
    """An evaluation's key, by content only: the model's identity, the task's configurations and data
    (`tasks.config_key`: no folder of this machine), shots, `limits` = (limit, after; after only where given), seed,
    lm-eval's version and this format."""
    limit, after = limits
    return {
        "format": FORMAT_VERSION,
        "lm_eval": lm_eval.__version__,
        "model": identity,
        "task": name,
        **config_key(name, configs),
        "shots": shots,
        "limit": limit,
        **({"after": after} if after is not None else {}),
        "seed": seed,
    }


def _checked(stored: Any) -> dict[str, Any]:
    """A cached evaluation of one task (its name, rows, question scores and probabilities) as this version writes
    it, else ValueError (the store then recomputes it)."""
    valid = (
        isinstance(stored, dict)
        and stored.get("task") in TASKS
        and _valid_rows(stored.get("rows"), stored["task"])
        and isinstance(stored.get("questions"), dict)
        and isinstance(stored.get("probabilities"), dict)
        and stored["probabilities"].keys() == stored["questions"].keys()
    )
    if not valid:
        raise ValueError("not an evaluation entry of this format")
    return stored


def _valid_rows(rows: object, task: str) -> bool:
    return (
        isinstance(rows, list)
        and [row.get("metric") if isinstance(row, dict) else None for row in rows] == list(TASKS[task].metrics)
        and all(set(row) == set(COLUMNS) and row["task"] == task for row in rows)
    )


def _run(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    configs: Mapping[str, dict],
    seed: int,
    batch_size: int,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """Run lm-eval once over all `configs` (short name -> YAML files); per task its name, rows, question scores
    and probabilities of the right answer."""
    results, tasks = lm_eval_results(model, tokenizer, configs, seed, batch_size, progress)
    return {
        name: {
            "task": name,
            "rows": _rows(name, results),
            "questions": _questions(name, results, tasks),
            "probabilities": _probabilities(name, results, tasks),
        }
        for name in configs
    }


def lm_eval_results(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    configs: Mapping[str, dict],
    seed: int,
    batch_size: int,
    progress: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """lm-eval's results of one run over all `configs` (with every sample logged) and its task objects by name."""
    was_training, used_cache = model.training, model.config.use_cache
    model.config.use_cache = False  # scoring reuses no KV cache (generation asks for one itself)
    with tempfile.TemporaryDirectory(prefix="layerprune-tasks-") as tmp, _quiet_lm_eval():
        for files in configs.values():
            write_configs(Path(tmp), files)
        manager = TaskManager(include_path=tmp, include_defaults=False)
        loaded = manager.load([TASKS[name].lm_eval_name for name in configs])
        for task in loaded["tasks"].values():
            task.set_fewshot_seed(seed=seed)
        lm = _ProgressHFLM(
            pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model_device(model))
        )
        lm._device = model_device(model)  # HFLM takes a model object's `.device`: "meta" where accelerate offloaded
        lm.show_progress = progress
        try:
            results = lm_evaluate(lm=lm, task_dict=loaded, log_samples=True)
        finally:
            model.train(was_training)
            model.config.use_cache = used_cache
    return results, dict(loaded["tasks"])


class _ProgressHFLM(ContinuationHFLM):
    """`ContinuationHFLM` (lm-eval's HFLM, each context once, the head only at continuation positions) whose request
    progress bars can be switched off."""

    show_progress = True

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.show_progress)


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """Hide lm-eval's log messages (unless its logger was configured) and every progress bar but its main one."""
    logger = logging.getLogger("lm_eval")
    quiet = logger.level == logging.NOTSET and not os.environ.get("LMEVAL_LOG_LEVEL")
    bars_were_on = not datasets.are_progress_bars_disabled()
    if quiet:
        logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        with (
            mock.patch.object(lm_eval.api.task, "tqdm", _silent_tqdm),
            mock.patch.object(lm_eval.api.model, "tqdm", _silent_tqdm),
        ):
            yield
    finally:
        if quiet:
            logger.setLevel(logging.NOTSET)
        if bars_were_on:
            datasets.enable_progress_bars()


def _silent_tqdm(iterable: Iterable, **_kwargs: Any) -> Iterable:
    return iterable


def _rows(name: str, results: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of one task from lm-eval's results (for MMLU: its group over the evaluated subjects)."""
    spec = TASKS[name]
    scores = results["results"][spec.lm_eval_name]
    return [
        {
            "task": name,
            "metric": metric,
            "value": float(scores[f"{metric},none"]),
            "stderr": _stderr(scores, metric),
            "n": int(scores["sample_len"]),
            "shots": int(results["n-shot"][spec.lm_eval_name]),
            "chance": spec.chance,
            "headline": metric == spec.headline,
        }
        for metric in spec.metrics
    ]


def _questions(name: str, results: dict[str, Any], tasks: Mapping[str, Any]) -> dict[str, float]:
    """Each question's headline score, by `_question_id`."""
    spec = TASKS[name]
    samples = _samples(name, results)
    return {_question_id(task, tasks[task], sample): float(sample[spec.headline]) for task, sample in samples}


def _probabilities(name: str, results: dict[str, Any], tasks: Mapping[str, Any]) -> dict[str, float]:
    """Each question's probability of the right answer, by `_question_id`: the softmax over the choices of the
    log-likelihoods that lm-eval's ``acc`` takes the largest of (its "filtered" responses), at the right choice
    (several right choices: their sum)."""
    scores = {}
    for task, sample in _samples(name, results):
        logliks = [float(response[0]) for response in sample["filtered_resps"]]
        gold = _gold(tasks[task], sample["doc"])
        scores[_question_id(task, tasks[task], sample)] = _right_answer_probability(logliks, gold)
    return scores


def _samples(name: str, results: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(lm-eval task, logged sample) of every question of the task `name` (MMLU: one lm-eval task per subject)."""
    lm_eval_name = TASKS[name].lm_eval_name
    for task, samples in sorted(results.get("samples", {}).items()):
        if task == lm_eval_name or task.startswith(f"{lm_eval_name}_"):
            yield from ((task, sample) for sample in samples)


def _question_id(task: str, loaded: Any, sample: Mapping[str, Any]) -> str:
    """A question's id, "<lm-eval task>:<row of the split>": the same in every subset that holds the question
    (lm-eval's doc_id is its position in the subset evaluated)."""
    rows = (loaded.config.dataset_kwargs or {}).get("indices")
    doc = int(sample["doc_id"])
    return f"{task}:{doc if rows is None else rows[doc]}"


def _gold(task: Any, doc: Mapping[str, Any]) -> list[int]:
    """The indices of the right choices of a multiple-choice question, as lm-eval's ``process_results`` finds
    them (the target, or the text for tasks whose choices are contexts, as Winogrande; a choice's text -> its
    index)."""
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    choices = task.doc_to_choice(doc)
    return [choices.index(item) if isinstance(item, str) else int(item) for item in _as_list(gold)]


def _as_list(gold: Any) -> list:
    return list(gold) if isinstance(gold, list | tuple) else [gold]


def _right_answer_probability(logliks: list[float], gold: list[int]) -> float:
    """softmax(`logliks`) summed over the indices `gold` (computed in float64, stable)."""
    values = torch.tensor(logliks, dtype=torch.float64)
    probabilities = torch.softmax(values, dim=0)
    return float(sum(probabilities[index] for index in gold if 0 <= index < len(logliks)))


def _stderr(scores: dict[str, Any], metric: str) -> float | None:
    """lm-eval's standard error, else (its "N/A") the binomial one over all questions; None for one question."""
    try:
        stderr = float(scores[f"{metric}_stderr,none"])
    except (KeyError, TypeError, ValueError):
        value, n = float(scores[f"{metric},none"]), int(scores["sample_len"])
        return math.sqrt(value * (1 - value) / (n - 1)) if n > 1 else None
    return stderr if math.isfinite(stderr) else None
