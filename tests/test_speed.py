"""The measuring functions on tiny models: sane structures, positive ratios and memory, the efficiency formula on
a constructed case, the baseline's distances, and the GPU script's CPU path. No assertion on timings."""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import layerprune as lp
from layerprune import machine, speed
from layerprune.adapters import num_layers
from layerprune.cache import store
from layerprune.tiny import tiny_model

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", num_layers=4, hidden=32)


@pytest.fixture(scope="module")
def blocks():
    return torch.randint(0, 256, (6, 16), generator=torch.Generator().manual_seed(0))


def test_machine_is_described():
    info = machine.machine()
    assert info["cores"] >= 1 and info["torch threads"] >= 1 and info["torch"] == torch.__version__
    assert "cpu: " in machine.describe_machine()


def test_rounds_rotate_the_order_and_call_each_variant_once_per_round():
    calls = []
    results = speed.rounds({name: (lambda n=name: calls.append(n) or n) for name in "abc"}, 3, progress=False)
    assert results == {"a": ["a"] * 3, "b": ["b"] * 3, "c": ["c"] * 3}
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_paired_ratio_is_the_median_of_per_round_ratios():
    assert speed.paired_ratio([2.0, 9.0, 3.0], [1.0, 3.0, 1.0]) == 3.0


def test_efficiency_formula_on_a_constructed_case():
    # four layers of 1 s each and 1 s outside them: removing two saves 2 of 5 s, an ideal speedup of 5/3
    assert speed.ideal_speedup([1.0, 1.0, 1.0, 1.0], 5.0, [0, 1]) == pytest.approx(5 / 3)
    shares = [0.2, 0.2, 0.2, 0.2]
    exact = speed.efficiency([5.0, 5.0], [3.0, 3.0], shares, [0, 1])
    assert exact == pytest.approx({"speedup": 5 / 3, "ideal": 5 / 3, "efficiency": 1.0})
    half = speed.efficiency([5.0], [4.0], shares, [2, 3])
    assert half["efficiency"] == pytest.approx((5 / 4) / (5 / 3))


_ALLOCATE_64_MIB = """
import torch
from layerprune import speed
with speed.PeakMemory(torch.device("cpu")) as memory:
    data = torch.ones(16 * 2**20)
    del data
print(memory.peak, memory.increase)
"""


def test_peak_memory_sees_an_allocation():
    """In a fresh interpreter with large blocks always mapped (as `in_subprocess` runs benchmarks): in this
    long-lived process a freed heap could serve 64 MiB from pages already resident, and rightly show no increase."""
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-c", _ALLOCATE_64_MIB], env=env, capture_output=True, text=True, check=True)
    peak, increase = map(float, done.stdout.split())
    assert peak > 0
    if sys.platform == "linux":
        assert 50 <= increase < 200


def test_checks_and_report_tables():
    report = speed.Report("t", [{"x": 1.234567, "n": 3}], [speed.Check("x", 1.234567, 1.1, False)])
    assert report.table().iloc[0].to_dict() == {"x": 1.235, "n": 3}
    assert report.goals().iloc[0].to_dict() == {"measure": "x", "value": 1.235, "goal": "<= 1.1", "met": False}
    assert "== t" in report.text() and "goals" in report.text()


def test_hidden_state_baseline_agrees_with_the_one_pass_profile(model, blocks):
    profile = lp.profile_distances(model, blocks, progress=False)
    for n in (1, 2):
        baseline = speed.hidden_state_distances(model, blocks, n, batch_size=4)
        assert baseline.shape == (5 - n,)
        # the last entry differs on purpose: the tools' last hidden state is after the final norm
        np.testing.assert_allclose(baseline[:-1], profile.curve(n)[:-1], atol=1e-5)


def test_profiling_speed_reports_positive_ratios(model, blocks):
    report = speed.profiling_speed(model, blocks, batch_size=4, repeats=2, baseline_passes=2, progress=False)
    table = report.table()
    assert len(table) == 4 and (table["seconds (best)"] > 0).all() and (table["time / forward (median)"] > 0).all()
    assert table["passes timed"].iloc[2] == "2 of 4"
    assert report.checks[0].measure == "profile_distances time / forward time"
    assert all(check.value > 0 for check in report.checks)


def test_variant_memory_is_positive(model, blocks):
    for variant in speed.PROFILE_VARIANTS:
        row = speed.variant_memory(model, blocks, variant, 4)
        assert row["variant"] == variant and row["peak MiB"] > 0
    with pytest.raises(ValueError, match="unknown variant"):
        speed.run_variant(model, blocks, "nothing", 4)


def test_memory_in_a_fresh_process_by_model_name(corpus):
    report = speed.profiling_memory("tiny-llama", block_size=16, count=4, batch_size=2, corpus=corpus)
    table = report.table()
    assert list(table["variant"]) == list(speed.PROFILE_VARIANTS)
    assert (table["peak MiB"] > 0).all() and (table["increase MiB"] >= 0).all()
    assert report.checks[0].measure == "hidden_states / profile_distances peak" and report.checks[0].value > 0


def test_inference_speed_rows_and_efficiencies(model, blocks):
    profile = lp.profile_distances(model, blocks, progress=False)
    report = speed.inference_speed(
        model, blocks[:2, :8], new_tokens=3, fractions=(0.25, 0.5), profile=profile, repeats=2, progress=False
    )
    table = report.table()
    assert list(table["fraction"]) == [0.0, 0.25, 0.5] and list(table["layers"]) == [4, 3, 2]
    assert table["parameters"].is_monotonic_decreasing
    for phase in ("prefill", "decode"):
        assert (table[f"{phase} tokens/s"] > 0).all() and (table[f"{phase} efficiency"] > 0).all()
        assert table[f"{phase} ideal"].iloc[0] == 1.0 and (table[f"{phase} ideal"].iloc[1:] > 1).all()
    assert len(report.checks) == 4
    assert speed.speedup_figure(report).axes


def test_layer_shares_add_up_to_at_most_one(model, blocks):
    shares = speed.layer_shares(model, blocks[:1, :8], steps=2, repeats=1)
    for phase in ("prefill", "decode"):
        assert len(shares[phase]) == 4 and all(s > 0 for s in shares[phase]) and sum(shares[phase]) < 1


def test_last_layers_without_a_profile(model):
    pruned = speed.pruned_models(model, [0.0, 0.5], profile=None)
    assert pruned[0.0] == ((), model)
    assert pruned[0.5][0] == (1, 2) and num_layers(pruned[0.5][1]) == 2


def test_healing_run_in_process(corpus):
    row = speed.healing_run("tiny-llama", None, steps=1, batch_size=2, block_size=16, corpus=corpus)
    assert row["method"].startswith("LoRA") and row["tokens"] == 32 and row["tokens/s"] > 0
    assert all(math.isfinite(row[key]) for key in ("model MiB", "load peak MiB", "train peak MiB"))


def test_evaluation_speed_replays_lm_evals_batches(tokenizer):
    report = speed.evaluation_speed(
        tiny_model("llama", num_layers=2), tokenizer, limit=2, batch_size=4, repeats=1, progress=False
    )
    table = report.table()
    assert list(table["batches"]) == [table["batches"][0]] * 2 and table["batches"][0] >= 1
    assert (table["tokens (padded)"] > 0).all() and (table["time / forward (median)"] > 0).all()


def test_scoring_speed_compares_both_scorings_on_the_same_questions(tokenizer):
    report = speed.scoring_speed(
        tiny_model("llama", num_layers=2), tokenizer, limit=3, batch_size=4, repeats=1, progress=False
    )
    table = report.table()
    assert len(table) == 2 and (table["seconds (best)"] > 0).all()
    assert table["headline"][0] == table["headline"][1]
    assert all(check.met for check in report.checks)


def test_scoring_speed_measures_each_scoring_against_the_float32_reference():
    reference = speed.float32_reference("tiny-llama", "mmlu", 4, 4)
    model, tokenizer = lp.load_model("tiny-llama", dtype="float32")
    report = speed.scoring_speed(
        model, tokenizer, task="mmlu", limit=4, batch_size=4, repeats=1, progress=False, reference=reference
    )
    table = report.table()
    assert list(table["differ from float32"]) == [0, 0]  # the same model in float32: no question moves
    assert (table["max |dp| to float32"] < 1e-4).all() and (table["mean |dp| to float32"] >= 0).all()
    with torch.no_grad():
        lp.get_adapter(model).norm(model).weight.mul_(100.0)  # sharper answers: another model than the reference's
    moved = speed.scoring_speed(
        model, tokenizer, task="mmlu", limit=4, batch_size=4, repeats=1, progress=False, reference=reference
    ).table()
    assert (moved["mean |dp| to float32"] > 1e-3).all()


def _bench_script(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_book_bench_copies_the_sources_and_starts_a_fresh_cache(monkeypatch, tmp_path, isolated_cache):
    book_bench = _bench_script("book", monkeypatch)
    (isolated_cache / "wheels").mkdir(parents=True)
    book_bench.copy_sources(tmp_path / "work")
    book_bench.fresh_cache(tmp_path / "fresh")
    assert {p.name for p in (tmp_path / "work").iterdir()} == set(book_bench.SOURCES)
    assert not (tmp_path / "work" / "book" / "generated").exists()
    assert (tmp_path / "fresh" / "wheels").resolve() == (isolated_cache / "wheels").resolve()


def test_book_bench_report_per_chapter(monkeypatch):
    book_bench = _bench_script("book", monkeypatch)
    from layerprune.book.runner import BookRun

    cold = book_bench.BookRun(10.0, 0, "", BookRun("smoke", executed={"01_a": 6.0}, peak_mib={"01_a": 2048.0}))
    warm = book_bench.BookRun(5.0, 0, "", BookRun("smoke", executed={"01_a": 2.0}, peak_mib={"01_a": 1024.0}))
    table = book_bench.report(cold, warm, "smoke").table()
    assert list(table["part"]) == ["01_a", "rest (start-up, HTML build)", "make book, in all"]
    assert list(table["warm / cold"]) == pytest.approx([2 / 6, 3 / 4, 0.5], rel=1e-3)
    assert table["cold peak GiB"].iloc[0] == pytest.approx(2.0)


def test_book_bench_floor_from_a_record(monkeypatch):
    book_bench = _bench_script("book", monkeypatch)
    from layerprune.book.runner import BookRun

    record = BookRun("default", ["m"], executed={"01_a": 30.0, "02_b": 10.0}, peak_mib={"01_a": 1024.0, "02_b": 512.0},
                     gflop={"01_a": 2000.0, "02_b": 1000.0}, matmul_gflops=100.0, seconds=45.0)  # fmt: skip
    table = book_bench.efficiency(record).table()
    assert list(table["floor s"].iloc[:3]) == pytest.approx([20.0, 10.0, 30.0])
    assert list(table["wall / floor"].iloc[:3]) == pytest.approx([1.5, 1.0, 40 / 30], rel=1e-3)


def test_gpu_plan_for_the_7b_shape(monkeypatch, capsys):
    gpu = _bench_script("gpu", monkeypatch)
    args = argparse.Namespace(shape="7b", seed=0, precisions="bf16,4bit", fractions=[0.0, 0.5], **gpu.SETTINGS["7b"])
    gpu.show_plan(args)
    assert "parameters: 6.738 B" in capsys.readouterr().out


def test_gpu_script_runs_its_whole_path_on_a_cpu():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--shape", "tiny", "--device", "cpu", "--threads", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("== profiling:") == 2 and done.stdout.count("== pruned inference") == 2
    assert "## 4-bit NF4" in done.stdout


def test_a_cached_report_is_measured_once_per_machine(model, blocks, isolated_cache, monkeypatch):
    measured = []
    measure = speed.profiling_speed.__wrapped__

    @functools.wraps(measure)
    def counting(*args, **kwargs):
        measured.append(1)
        return measure(*args, **kwargs)

    cached_speed = speed.cacheable("profiling")(counting)
    first = cached_speed(model, blocks, batch_size=3, repeats=1, progress=False, cache=True)
    again = cached_speed(model, blocks, batch_size=3, repeats=1, progress=True, cache=True)
    assert len(measured) == 1 and json.dumps(again.to_dict()) == json.dumps(first.to_dict())  # NaN included
    assert list(again.table().columns) == list(first.table().columns)
    assert [check.met for check in again.checks] == [check.met for check in first.checks]
    cached_speed(model, blocks, batch_size=3, repeats=2, progress=False, cache=True)
    assert len(measured) == 2  # another setting: measured again
    monkeypatch.setattr(store, "timing_machine", lambda: {"cpu": "another"})
    cached_speed(model, blocks, batch_size=3, repeats=1, progress=False, cache=True)
    assert len(measured) == 3  # another machine: measured again
    cached_speed(model, blocks, batch_size=3, repeats=1, progress=False)
    assert len(measured) == 4  # cache off: always measured


def test_report_survives_json(model, blocks):
    report = speed.inference_speed(model, blocks[:1], new_tokens=2, fractions=[0, 0.5], repeats=1, progress=False)
    restored = speed.Report.from_dict(json.loads(json.dumps(report.to_dict())))
    pd.testing.assert_frame_equal(restored.table(), report.table())
    pd.testing.assert_frame_equal(restored.goals(), report.goals())


def test_pruned_speed_is_cached(model, blocks, isolated_cache):
    profile = lp.profile_distances(model, blocks, progress=False)
    first = lp.speed.pruned_speed(model, profile, blocks[:2], [0.0, 0.5], repeats=1, cache=True)
    again = lp.speed.pruned_speed(model, profile, blocks[:2], [0.0, 0.5], repeats=1, cache=True)
    assert again == first and [list(row) for row in again] == [list(row) for row in first]  # same column order
    assert [row["n"] for row in first] == [0, 2] and first[1]["parameters"] < first[0]["parameters"]


def test_weight_bytes_count_tied_weights_once(model):
    tied = tiny_model("gpt2", num_layers=2, hidden=32)
    assert tied.get_output_embeddings().weight is tied.get_input_embeddings().weight
    for each in (model, tied):
        tensors = [*each.parameters(), *each.buffers()]  # parameters() yields a tied weight once
        assert speed.weight_bytes(each) == sum(t.numel() * t.element_size() for t in tensors)
    every = tied.named_parameters(remove_duplicate=False)
    assert speed.weight_bytes(tied) < sum(t.numel() * t.element_size() for _, t in every)


def test_step_memory_measures_each_step_over_the_weights_in_a_fresh_process():
    # in this process the level before loading carries what earlier tests left, which a trim may take away
    steps = ("prune", "base")
    report = speed.step_memory("tiny-llama", heal_steps=1, block_size=16, steps=steps)
    assert [check.measure for check in report.checks] == [f"{step}: process peak / weights" for step in steps]
    for row in report.rows:
        assert row["weights MiB"] > 0 and row["process peak MiB"] >= row["step increase MiB"] >= 0


def test_flops_per_token_counts_every_linear_weight_twice_and_the_causal_attention():
    from layerprune.speed import utilization

    model = tiny_model("llama", num_layers=2, hidden=32)
    linear = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    head = model.lm_head.weight.numel()
    assert utilization.flops_per_token(model, 16) == 2 * (linear + head) + 2 * 2 * 32 * 16
    assert utilization.flops_per_token(model, 16, head=False) == 2 * linear + 2 * 2 * 32 * 16
    report = utilization.utilization_report(1e6, {"tokens/s": 10.0, "FLOP/s": 1e7}, {"method": "LoRA", "tokens/s": 2.0},
                                            16, 2e7, "torch.float32")  # fmt: skip
    assert [check.value for check in report.checks] == pytest.approx([0.5, 0.2])
    assert [check.met for check in report.checks] == [True, False]
