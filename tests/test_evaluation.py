import argparse
import json
import os
import subprocess
import sys

import pytest
import torch

from layerprune.assets import BENCHMARK_DATASETS, benchmark_dir
from layerprune.cli import eval_commands
from layerprune.errors import InvalidInputError
from layerprune.evaluation import harness as evaluation
from layerprune.evaluation import tasks
from layerprune.evaluation.harness import COLUMNS, evaluate
from layerprune.evaluation.scoring import ContinuationHFLM, _branch_mask, stock_scoring
from layerprune.evaluation.tasks import TASK_NAMES, sample_indices, subject_limits, task_configs, write_task_configs
from layerprune.head import split_head
from layerprune.tiny import TINY_FAMILIES, tiny_model

MMLU_SUBJECTS = [f"s{i}" for i in range(57)]
SMALL = {"mmlu": 10, "boolq": 4, "arc_easy": 4, "arc_challenge": 4, "piqa": 4, "hellaswag": 4, "winogrande": 4}
CHANCE = {
    "mmlu": 0.25,
    "boolq": 0.5,
    "arc_easy": 0.25,
    "arc_challenge": 0.25,
    "piqa": 0.5,
    "hellaswag": 0.25,
    "winogrande": 0.5,
}


@pytest.fixture(scope="session")
def benchmark_dirs():
    """The embedded benchmark folders in the real cache (read only), resolved before any cache is isolated."""
    return {dataset: benchmark_dir(dataset) for dataset in BENCHMARK_DATASETS}


@pytest.fixture
def eval_cache(isolated_cache, benchmark_dirs, monkeypatch):
    """An empty cache for results; the benchmarks are still read from the real cache."""
    monkeypatch.setattr(tasks, "benchmark_dir", benchmark_dirs.__getitem__)
    return isolated_cache


@pytest.fixture
def model_runs(monkeypatch):
    """Counts how often the model is handed to lm-eval."""
    calls = []
    original = evaluation._ProgressHFLM

    def counting(**kwargs):
        calls.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(evaluation, "_ProgressHFLM", counting)
    return calls


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("llama", num_layers=2)


def test_every_task_runs_end_to_end_into_a_tidy_table(eval_cache, tiny, tokenizer):
    results = evaluate(tiny, tokenizer, TASK_NAMES, limit=SMALL, progress=False)
    assert [tuple(row) for row in results.rows] == [COLUMNS] * len(results.rows)
    assert [row["task"] for row in results.rows if row["headline"]] == list(TASK_NAMES)
    for row in results.rows:
        spec = tasks.TASKS[row["task"]]
        assert row["metric"] in spec.metrics and 0.0 <= row["value"] <= 1.0
        assert row["n"] == SMALL[row["task"]]
        assert row["chance"] == pytest.approx(CHANCE[row["task"]])
        assert row["shots"] == (5 if row["task"] == "mmlu" else 0)
        assert row["stderr"] is not None  # MMLU with one question per subject: the binomial stderr
    metrics = {(row["task"], row["metric"]) for row in results.rows}
    assert ("arc_easy", "acc_norm") in metrics and ("hellaswag", "acc_norm") in metrics
    assert ("boolq", "acc_norm") not in metrics and ("winogrande", "acc_norm") not in metrics
    headline = {row["task"]: row["metric"] for row in results.rows if row["headline"]}
    assert headline == {name: "acc_norm" if name in ("arc_challenge", "hellaswag") else "acc" for name in TASK_NAMES}
    assert results.headline().keys() == set(TASK_NAMES)
    assert results.to_markdown().splitlines()[0] == "| " + " | ".join(COLUMNS) + " |"
    assert results.to_csv().splitlines()[0] == ",".join(COLUMNS)


def test_cache_hit_returns_identical_rows_without_running_the_model(eval_cache, tiny, tokenizer, model_runs):
    first = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=3, progress=False)
    assert len(model_runs) == 1
    assert len(list((eval_cache / "results" / "evaluation").rglob("*.json"))) == 2
    again = evaluate(tiny, tokenizer, "mmlu,arc_easy", limit=3, progress=False)
    assert len(model_runs) == 1
    assert again.rows == first.rows[2:] + first.rows[:2]


def test_a_damaged_cache_file_is_recomputed_not_used(eval_cache, tiny, tokenizer, model_runs):
    first = evaluate(tiny, tokenizer, ["boolq"], limit=3, progress=False)
    (path,) = (eval_cache / "results" / "evaluation").rglob("*.json")
    payload = json.loads(path.read_text())
    payload["value"]["rows"][0]["value"] = 0.999
    for damaged in (json.dumps(payload), path.read_text()[:40], ""):
        path.write_text(damaged)
        assert evaluate(tiny, tokenizer, ["boolq"], limit=3, progress=False).rows == first.rows
    assert len(model_runs) == 4
    assert json.loads(path.read_text())["value"]["rows"] == first.rows


def test_the_cache_key_covers_model_limit_seed_and_shots(eval_cache, tiny, tokenizer, model_runs):
    evaluate(tiny, tokenizer, ["arc_easy"], limit=3, progress=False)
    evaluate(tiny, tokenizer, ["arc_easy"], limit=4, progress=False)
    evaluate(tiny, tokenizer, ["arc_easy"], limit=3, seed=1, progress=False)
    evaluate(tiny, tokenizer, ["arc_easy"], limit=3, num_fewshot=1, progress=False)
    changed = tiny_model("llama", num_layers=2)
    with torch.no_grad():
        changed.model.norm.weight.add_(0.5)
    evaluate(changed, tokenizer, ["arc_easy"], limit=3, progress=False)
    assert len(model_runs) == 5
    evaluate(tiny, tokenizer, ["arc_easy"], limit=3, progress=False, cache=False)
    assert len(model_runs) == 6


def test_peft_models_are_evaluated_and_keep_their_training_mode(eval_cache, tokenizer):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model("llama", num_layers=2), LoraConfig(r=2, target_modules=["up_proj"]))
    model.train()
    results = evaluate(model, tokenizer, ["winogrande"], limit=2, progress=False, cache=False)
    assert results.rows[0]["n"] == 2 and model.training


def test_subsampling_is_seeded_and_spreads_mmlu_over_subjects(eval_cache):
    assert sample_indices(100, 5, "arc_easy", 0) == sample_indices(100, 5, "arc_easy", 0)
    assert sample_indices(100, 5, "arc_easy", 0) != sample_indices(100, 5, "arc_easy", 1)
    assert sample_indices(100, 100, "arc_easy", 0) is None and sample_indices(100, None, "arc_easy", 0) is None
    subjects = [f"s{i}" for i in range(57)]
    assert set(subject_limits(subjects, 114, 0).values()) == {2}
    uneven = subject_limits(subjects, 60, 0)
    assert sorted(uneven.values()).count(2) == 3 and sum(uneven.values()) == 60
    few = subject_limits(subjects, 10, 0)
    assert len(few) == 10 and few == subject_limits(subjects, 10, 0) and few != subject_limits(subjects, 10, 1)
    configs = task_configs("mmlu", limit=114)
    subject_configs = [c for c in configs.values() if "task" in c and c.get("group") is None]
    assert len(subject_configs) == 57 and all(len(c["dataset_kwargs"]["indices"]) == 2 for c in subject_configs)
    assert configs == task_configs("mmlu", limit=114)
    assert task_configs("arc_easy", limit=5) != task_configs("arc_easy", limit=5, seed=1)


def _subset(configs: dict) -> set[tuple[str, int]]:
    """(subject task, row) of every question the configurations evaluate."""
    subsets = [(c["task"], c["dataset_kwargs"]["indices"]) for c in configs.values() if "dataset_kwargs" in c]
    return {(task, row) for task, rows in subsets for row in rows}


@pytest.mark.parametrize("smaller, larger", [(3, 4), (5, 60), (30, 90), (300, 450), (57, 114)])
def test_a_smaller_limit_asks_questions_a_larger_one_asks_too(eval_cache, smaller, larger):
    for seed in (0, 1):
        assert set(sample_indices(1000, smaller, "arc", seed)) < set(sample_indices(1000, larger, "arc", seed))
        few, many = subject_limits(MMLU_SUBJECTS, smaller, seed), subject_limits(MMLU_SUBJECTS, larger, seed)
        assert all(count <= many[subject] for subject, count in few.items())
        mmlu = {limit: _subset(task_configs("mmlu", limit=limit, seed=seed)) for limit in (smaller, larger)}
        assert mmlu[smaller] < mmlu[larger]


@pytest.mark.parametrize("task, smaller, larger", [("arc_easy", 6, 9), ("mmlu", 300, 450), ("mmlu", 20, 60)])
def test_after_keeps_the_questions_a_larger_limit_adds(eval_cache, task, smaller, larger):
    parts = [_subset(task_configs(task, limit=smaller)), _subset(task_configs(task, limit=larger, after=smaller))]
    assert not parts[0] & parts[1] and parts[0] | parts[1] == _subset(task_configs(task, limit=larger))


def test_after_refuses_what_cannot_be_scored_in_parts(eval_cache):
    with pytest.raises(InvalidInputError, match="below the limit"):
        task_configs("arc_easy", limit=6, after=6)
    with pytest.raises(InvalidInputError, match="drawn from the evaluated questions"):
        task_configs("arc_easy", limit=9, after=6, num_fewshot=2)
    with pytest.raises(InvalidInputError, match="adds no question"):
        task_configs("arc_easy", limit=None, after=600)
    assert tasks.questions_independent("mmlu", None) and not tasks.questions_independent("arc_easy", 1)


def test_a_subset_scored_in_parts_scores_each_question_as_at_once(eval_cache, tiny, tokenizer):
    """The questions a larger limit adds, scored on their own (`after`), get the ids and scores they get when the
    larger subset is scored at once; the MMLU figure of the two parts (mean over subjects) is lm-eval's."""
    from layerprune.study.sweeps import _subject_average

    whole = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=60, progress=False)
    first = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=20, progress=False)
    rest = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=60, after=20, progress=False)
    for task in ("arc_easy", "mmlu"):
        assert first.questions[task] | rest.questions[task] == whole.questions[task]
        merged = first.probabilities[task] | rest.probabilities[task]
        assert merged == pytest.approx(whole.probabilities[task], abs=1e-5)
    assert _subject_average(whole.questions["mmlu"]) == pytest.approx(whole.headline()["mmlu"], abs=1e-12)


def test_a_question_keeps_its_id_and_score_in_every_subset(eval_cache, tiny, tokenizer):
    """Ids name a question by its row in the split, not by its position in the subset evaluated: a model scored
    on a subset and on a larger one gives each shared question the same id and the same scores."""
    few = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=4, progress=False)
    many = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=60, progress=False)
    rows = sample_indices(570, 4, "arc_easy", 0)
    assert set(few.questions["arc_easy"]) == {f"lp_arc_easy:{row}" for row in rows}
    for task in ("arc_easy", "mmlu"):
        assert set(few.questions[task]) < set(many.questions[task])
        for question, score in few.questions[task].items():
            assert many.questions[task][question] == score
            assert many.probabilities[task][question] == pytest.approx(few.probabilities[task][question], abs=1e-5)


def test_prompts_are_those_of_lm_evals_standard_tasks(eval_cache, tmp_path):
    from lm_eval.tasks import TaskManager

    names = write_task_configs(tmp_path, limit=dict.fromkeys(TASK_NAMES, 1))
    loaded = TaskManager(include_path=tmp_path, include_defaults=False).load(names)["tasks"]
    first = {name.removeprefix("lp_"): (task, next(iter(task.eval_docs))) for name, task in loaded.items()}
    task, doc = first["boolq"]
    assert task.doc_to_text(doc) == f"{doc['passage']}\nQuestion: {doc['question']}?\nAnswer:"
    assert task.doc_to_choice(doc)[task.doc_to_target(doc)] == ("yes" if doc["answer"] else "no")
    task, doc = first["arc_easy"]
    assert task.doc_to_text(doc) == f"Question: {doc['question']}\nAnswer:"
    assert (
        task.doc_to_choice(doc)[task.doc_to_target(doc)]
        == doc["choices"]["text"][doc["choices"]["label"].index(doc["answerKey"])]
    )
    task, doc = first["piqa"]
    assert task.doc_to_text(doc) == f"Question: {doc['goal']}\nAnswer:"
    assert task.doc_to_choice(doc) == [doc["sol1"], doc["sol2"]] and task.doc_to_target(doc) == doc["label"]
    task, doc = first["winogrande"]
    assert task.doc_to_text(doc) == int(doc["answer"]) - 1 and len(task.doc_to_choice(doc)) == 2
    task, doc = first["hellaswag"]
    assert len(task.doc_to_choice(doc)) == 4 and "[" not in task.doc_to_text(doc)
    (subject,) = [name for name in first if name.startswith("mmlu_")]
    task, doc = first[subject]
    letters = "".join(f"\n{letter}. {choice}" for letter, choice in zip("ABCD", doc["choices"], strict=True))
    assert task.doc_to_text(doc) == f"{doc['question'].strip()}{letters}\nAnswer:"
    context = task.fewshot_context(doc, num_fewshot=5)
    assert context.startswith(
        f"The following are multiple choice questions (with answers) about {subject[5:].replace('_', ' ')}.\n\n"
    )
    assert context.count("\nAnswer:") == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": ["arc_easy", "mmlu_pro"]}, "unknown task(s) 'mmlu_pro'; valid tasks: mmlu, boolq, arc_easy"),
        ({"tasks": []}, "no tasks given"),
        ({"tasks": 3}, "tasks must be"),
        ({"limit": 0}, "limit must be an integer >= 1 or None, got 0"),
        ({"limit": -5}, "got -5"),
        ({"limit": 2.5}, "got 2.5"),
        ({"limit": True}, "got True"),
        ({"limit": {"mmlu": 5}}, "has no entry for ['arc_easy']"),
        ({"limit": {"arc_easy": 5, "arc": 5}}, "unknown tasks ['arc']"),
        ({"limit": {"arc_easy": 0}}, "limit['arc_easy'] must be"),
        ({"num_fewshot": -1}, "num_fewshot must be an integer >= 0 or None, got -1"),
        ({"seed": "0"}, "seed must be an integer >= 0, got '0'"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"num_fewshot": 3, "limit": 3}, "arc_easy: 3-shot needs more than 3 evaluated questions"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(eval_cache, files_under, tiny, tokenizer, kwargs, message):
    arguments = {"tasks": ["arc_easy"], "progress": False, **kwargs}
    with pytest.raises(InvalidInputError) as error:
        evaluate(tiny, tokenizer, **arguments)
    assert message in str(error.value)
    assert files_under(eval_cache) == set()


def test_bad_models_and_mmlu_shots_are_clear_errors(eval_cache, files_under, tiny, tokenizer):
    with pytest.raises(InvalidInputError, match="model must be a transformers causal LM"):
        evaluate("smollm2-135m", tokenizer, ["boolq"])
    with pytest.raises(InvalidInputError, match="tokenizer must be a transformers tokenizer"):
        evaluate(tiny, "gpt2", ["boolq"])
    with pytest.raises(InvalidInputError, match="mmlu takes at most 5 few-shot examples"):
        evaluate(tiny, tokenizer, ["mmlu"], num_fewshot=6)
    with pytest.raises(InvalidInputError, match="unknown task"):
        write_task_configs(eval_cache / "configs", ["arc-easy"])
    assert files_under(eval_cache) == set()


def test_cli_writes_configs_and_evaluates_a_saved_model(eval_cache, tmp_path, tokenizer, capsys):
    tiny_model("llama", num_layers=2).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    parser = argparse.ArgumentParser()
    eval_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["tasks", "--out", str(tmp_path / "configs"), "--tasks", "boolq,piqa", "--limit", "2"])
    args.run(args)
    assert sorted(p.name for p in (tmp_path / "configs").iterdir()) == ["lp_boolq.yaml", "lp_piqa.yaml"]
    assert "--include_path" in capsys.readouterr().out
    out = tmp_path / "results.json"
    model = str(tmp_path / "model")
    args = parser.parse_args(["evaluate", "--model", model, "--tasks", "piqa", "--limit", "2", "--out", str(out)])
    args.run(args)
    assert [row["metric"] for row in json.loads(out.read_text())["rows"]] == ["acc", "acc_norm"]
    assert "| piqa | acc_norm |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["evaluate", "--limit", "many"])
    args = parser.parse_args(["evaluate", "--model", model, "--tasks", "pika"])
    with pytest.raises(InvalidInputError, match="unknown task"):
        args.run(args)


@pytest.mark.integration
def test_lm_eval_command_line_runs_the_written_configs_like_evaluate(eval_cache, tmp_path, tokenizer):
    model = tiny_model("llama", num_layers=2)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    names = write_task_configs(tmp_path / "configs", ["arc_easy", "winogrande"], limit=2)
    command = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tmp_path / 'model'}",
        "--device",
        "cpu",
        "--include_path",
        str(tmp_path / "configs"),
        "--tasks",
        ",".join(names),
        "--output_path",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path, env=env)
    (output,) = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(output.read_text())["results"]
    ours = evaluate(model, tokenizer, ["arc_easy", "winogrande"], limit=2, progress=False).rows
    for row in ours:
        assert theirs[f"lp_{row['task']}"][f"{row['metric']},none"] == pytest.approx(row["value"])


@pytest.fixture(scope="session")
def default_model():
    """The embedded default model from the real cache (session scope: loaded before any cache is isolated)."""
    from layerprune.models import load_model

    return load_model("smollm2-135m")


@pytest.mark.integration
def test_the_default_model_is_clearly_above_chance_on_arc_easy(eval_cache, default_model):
    model, tokenizer = default_model
    results = evaluate(model, tokenizer, ["arc_easy"], limit=200, num_fewshot=0, progress=False)
    acc = next(row for row in results.rows if row["metric"] == "acc")
    assert acc["n"] == 200 and acc["chance"] == 0.25
    assert acc["value"] > 0.38


def test_per_question_scores_are_stored_and_average_to_the_headline(eval_cache, tiny, tokenizer):
    results = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=6, progress=False)
    rows = {row["task"]: row for row in results.rows if row["headline"]}
    for task in ("arc_easy", "mmlu"):
        scores = results.questions[task]
        assert len(scores) == rows[task]["n"] and set(scores.values()) <= {0.0, 1.0}
    arc = results.questions["arc_easy"]
    assert sum(arc.values()) / len(arc) == pytest.approx(rows["arc_easy"]["value"])
    again = evaluate(tiny, tokenizer, ["arc_easy", "mmlu"], limit=6, progress=False)  # from the cache
    assert again.questions == results.questions
    assert again.probabilities == results.probabilities


def test_each_question_keeps_the_probability_of_its_right_answer(eval_cache, tiny, tokenizer):
    """The softmax over the choices of the log-likelihoods lm-eval's acc compares, at the right answer: for two
    choices it is above 1/2 exactly where the question is scored right."""
    configs = {name: task_configs(name, limit=limit) for name, limit in {"arc_easy": 5, "winogrande": 5}.items()}
    results, loaded = evaluation.lm_eval_results(tiny, tokenizer, configs, 0, 4, False)
    for name in configs:
        probabilities = evaluation._probabilities(name, results, loaded)
        assert probabilities.keys() == evaluation._questions(name, results, loaded).keys()
        for sample in results["samples"][f"lp_{name}"]:
            logliks = torch.tensor([response[0] for response in sample["filtered_resps"]], dtype=torch.float64)
            task = loaded[f"lp_{name}"]
            gold = task.doc_to_text(sample["doc"]) if name == "winogrande" else sample["target"]
            expected = torch.softmax(logliks, 0)[gold].item()
            question = evaluation._question_id(f"lp_{name}", task, sample)
            assert probabilities[question] == pytest.approx(expected, abs=1e-12)
            assert (expected == torch.softmax(logliks, 0).max().item()) == bool(sample["acc"])
    scored = evaluate(tiny, tokenizer, ["winogrande"], limit=5, progress=False)
    for key, probability in scored.probabilities["winogrande"].items():
        assert 0.0 <= probability <= 1.0 and (probability > 0.5) == (scored.questions["winogrande"][key] == 1.0)


def _samples_agree(stock: dict, ours: dict, tolerance: float) -> None:
    """Every request of every question got the same is_greedy and (to `tolerance`) the same log-likelihood, and
    every question the same scores."""
    assert stock["samples"].keys() == ours["samples"].keys()
    for task, samples in stock["samples"].items():
        assert [s["doc_id"] for s in samples] == [s["doc_id"] for s in ours["samples"][task]]
        for theirs, mine in zip(samples, ours["samples"][task], strict=True):
            assert [greedy for _, greedy in theirs["filtered_resps"]] == [g for _, g in mine["filtered_resps"]]
            for (expected, _), (got, _) in zip(theirs["filtered_resps"], mine["filtered_resps"], strict=True):
                assert got == pytest.approx(expected, abs=tolerance, rel=tolerance), (task, theirs["doc_id"])
            assert {m: theirs[m] for m in ("acc", "acc_norm") if m in theirs} == {
                m: mine[m] for m in ("acc", "acc_norm") if m in mine
            }


# MMLU (5-shot, prompts cut from the left to the tiny models' 512 positions; one-token answers, whose requests
# share one pass) and ARC-Easy (answers of several tokens), in batches of 3 with right padding.
SCORED = {"mmlu": 4, "arc_easy": 5}


def _both_scorings(model, tokenizer, batch_size: int = 3) -> tuple[dict, dict]:
    configs = {name: task_configs(name, limit=limit) for name, limit in SCORED.items()}
    with stock_scoring():
        stock, _ = evaluation.lm_eval_results(model, tokenizer, configs, 0, batch_size, False)
    ours, _ = evaluation.lm_eval_results(model, tokenizer, configs, 0, batch_size, False)
    return stock, ours


def _positions(module: torch.nn.Module) -> dict[bool, list[int]]:
    """Records how many positions each call of `module` computes, apart for lm-eval's own scoring (False) and
    ours (True)."""
    calls: dict[bool, list[int]] = {False: [], True: []}

    def record(_module, args, _out) -> None:
        calls[ContinuationHFLM.score_continuations_only].append(args[0].shape[:2].numel())

    module.register_forward_hook(record)
    return calls


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_scoring_only_continuations_equals_lm_evals_scoring_on_every_family(eval_cache, tokenizer, family):
    model = tiny_model(family, num_layers=2)
    if family == "gemma3_text":
        model.config.final_logit_softcapping = 0.05  # small enough to change every log-likelihood
    assert split_head(model) is not None
    head = _positions(model.get_output_embeddings())
    stock, ours = _both_scorings(model, tokenizer)
    _samples_agree(stock, ours, 1e-5)
    assert sum(head[True]) * 10 < sum(head[False])  # a small part of the positions
    if family == "gemma3_text":  # the cap was applied: without it the log-likelihoods differ
        model.config.final_logit_softcapping = None
        _, uncapped = _both_scorings(model, tokenizer)
        first, second = (run["samples"]["lp_arc_easy"][0]["filtered_resps"][0][0] for run in (ours, uncapped))
        assert abs(first - second) > 1e-2


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_each_context_is_computed_once_for_all_its_continuations_on_every_family(eval_cache, tokenizer, family):
    model = tiny_model(family, num_layers=2)
    if getattr(model.config, "sliding_window", None) is not None:
        model.config.sliding_window = 512  # the tiny models' window of 16 would keep every ARC prompt unpacked
    decoder = _positions(model.get_input_embeddings())
    configs = {"arc_easy": task_configs("arc_easy", limit=5)}
    with stock_scoring():
        stock, _ = evaluation.lm_eval_results(model, tokenizer, configs, 0, 3, False)
    ours, _ = evaluation.lm_eval_results(model, tokenizer, configs, 0, 3, False)
    _samples_agree(stock, ours, 1e-5)
    assert len(decoder[True]) == 2  # 5 questions, one packed row each, 3 rows a pass
    assert sum(decoder[True]) * 2 < sum(decoder[False])  # each question's context once, not once per choice


def test_a_packed_row_attends_to_its_context_and_its_own_branch():
    # one row: a context of 2 tokens, a branch of 2, a branch of 1, one padding position
    mask = _branch_mask(torch.tensor([[0, 0, 1, 1, 2, -1]]))
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 0, 0, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert mask.shape == (1, 1, 6, 6) and torch.equal(mask[0, 0], expected)


def test_scoring_only_continuations_on_peft_and_4bit_models(eval_cache, tokenizer):
    from peft import LoraConfig, get_peft_model

    from layerprune.models import load_model

    lora = get_peft_model(
        tiny_model("llama", num_layers=2), LoraConfig(r=2, target_modules=["up_proj"], init_lora_weights=False)
    )
    quantized, _ = load_model("tiny-llama", device="cpu", dtype="float32", quantization="4bit")
    for model in (lora, quantized):
        model.eval()
        assert split_head(model) is not None
        stock, ours = _both_scorings(model, tokenizer)
        _samples_agree(stock, ours, 1e-4)


@pytest.mark.integration
def test_the_default_model_scores_as_lm_eval_scores_it(eval_cache, default_model):
    model, tokenizer = default_model
    configs = {name: task_configs(name, limit=limit) for name, limit in {"mmlu": 6, "arc_easy": 8}.items()}
    with stock_scoring():
        stock, _ = evaluation.lm_eval_results(model, tokenizer, configs, 0, 4, False)
    ours, _ = evaluation.lm_eval_results(model, tokenizer, configs, 0, 4, False)
    _samples_agree(stock, ours, 1e-4)
