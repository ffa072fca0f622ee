import dataclasses
import getpass
import json
import shutil
import socket
from pathlib import Path

import torch

from layerprune.cache import (
    cache_root,
    cached,
    cached_batch,
    decode_records,
    encode_records,
    key_part,
    path_digest,
    tensor_digest,
)
from layerprune.evaluation.generation import greedy_generate
from layerprune.loss import heldout_loss
from layerprune.similarity import profile_distances
from layerprune.study.steps import cached_generations, pruned_losses
from layerprune.surgery import prune
from layerprune.tiny import byte_tokenizer, tiny_model


def test_results_are_computed_once_and_reused(isolated_cache):
    calls = []

    def compute():
        calls.append(1)
        return {"value": 3.5}

    first = cached("demo", {"a": 1}, compute, encode=dict, decode=dict)
    second = cached("demo", {"a": 1}, compute, encode=dict, decode=dict)
    assert first == second == {"value": 3.5} and len(calls) == 1
    cached("demo", {"a": 2}, compute, encode=dict, decode=dict)
    assert len(calls) == 2


def test_a_damaged_cache_file_is_recomputed_not_used(isolated_cache):
    cached("demo", {"a": 1}, lambda: {"value": 1}, encode=dict, decode=dict)
    (path,) = (cache_root() / "results" / "demo").glob("*.json")
    stored = json.loads(path.read_text())
    stored["value"]["value"] = 999
    path.write_text(json.dumps(stored))
    assert cached("demo", {"a": 1}, lambda: {"value": 1}, encode=dict, decode=dict) == {"value": 1}
    path.write_text("{ truncated")
    assert cached("demo", {"a": 1}, lambda: {"value": 2}, encode=dict, decode=dict) == {"value": 2}
    assert not [p for p in path.parent.iterdir() if p.suffix != ".json"]


def test_tensor_digest_sees_values_shape_and_dtype():
    base = torch.arange(6)
    assert tensor_digest(base) == tensor_digest(torch.arange(6))
    assert tensor_digest(base) != tensor_digest(base.view(2, 3))
    assert tensor_digest(base) != tensor_digest(base.to(torch.int32))
    assert tensor_digest(base) != tensor_digest(torch.tensor([0, 1, 2, 3, 4, 6]))


def test_records_keep_their_column_order():
    rows = [{"b": 1, "a": 2.5}, {"b": 3, "a": None, "c": "x"}]
    stored = json.loads(json.dumps(encode_records(rows), sort_keys=True))
    assert [list(row) for row in decode_records(stored)] == [["b", "a", "c"]] * 2
    assert decode_records(stored)[0] == {"b": 1, "a": 2.5, "c": None}


def test_pruned_losses_and_generations_from_the_cache_equal_direct_runs(isolated_cache):
    model = tiny_model("llama", num_layers=4, hidden=32)
    blocks = torch.randint(0, 256, (4, 12), generator=torch.Generator().manual_seed(1))
    profile = profile_distances(model, blocks, progress=False)
    for _ in range(2):  # computed, then read back
        rows = pruned_losses(model, profile, blocks, [0.25, 0.5], ["similarity", "last"], batch_size=2)
        for row in rows:
            direct = heldout_loss(prune(model, row["layers"]), blocks, batch_size=2, progress=False)
            assert abs(row["loss"] - direct.loss) < 1e-6, row
    tokenizer = byte_tokenizer()
    direct = greedy_generate(model, tokenizer, ["The Union"], max_new_tokens=4)
    assert cached_generations(model, tokenizer, ["The Union"], max_new_tokens=4) == direct
    assert cached_generations(model, tokenizer, ["The Union"], max_new_tokens=4) == direct


def _no_forward(model: torch.nn.Module, monkeypatch) -> None:
    """Make every module of `model` raise when called: whatever comes back afterwards came from the cache."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model ran")

    for module in model.modules():
        monkeypatch.setattr(module, "forward", refuse)


def test_a_cache_moved_to_another_directory_serves_every_result(tmp_path, monkeypatch):
    """Keys hold content only: a cache filled here, copied to another directory, with the benchmark data read from
    another folder and the process in another working directory, gives back every result with no model run."""
    from layerprune.assets import benchmark_dir
    from layerprune.evaluation import harness, tasks
    from layerprune.study.steps import cached_heldout_loss, cached_profile

    used = {tasks.TASKS[name].benchmark for name in ("arc_easy", "mmlu")}
    real = {dataset: benchmark_dir(dataset) for dataset in used}  # the embedded data, before the cache moves
    first, moved = tmp_path / "here" / "cache", tmp_path / "there" / "cache"
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(first))
    monkeypatch.setattr(tasks, "benchmark_dir", real.__getitem__)
    monkeypatch.chdir(tmp_path)
    model, tokenizer = tiny_model("llama", num_layers=3, hidden=32), byte_tokenizer()
    blocks = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    limits = {"arc_easy": 3, "mmlu": 3}
    results = harness.evaluate(model, tokenizer, list(limits), limit=limits, progress=False)
    profile = cached_profile(model, blocks, progress=False)
    loss = cached_heldout_loss(model, blocks, progress=False)

    shutil.copytree(first, moved)
    shutil.rmtree(first)
    data = tmp_path / "elsewhere" / "benchmarks"
    copies = {dataset: data / dataset for dataset in used}
    for dataset, folder in copies.items():
        shutil.copytree(real[dataset], folder)
    monkeypatch.setenv("LAYERPRUNE_CACHE", str(moved))
    monkeypatch.setattr(tasks, "benchmark_dir", copies.__getitem__)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    _no_forward(model, monkeypatch)

    again = harness.evaluate(model, tokenizer, list(limits), limit=limits, progress=False)
    assert again == results  # rows, question scores and probabilities
    assert cached_profile(model, blocks, progress=False).to_dict() == profile.to_dict()
    assert cached_heldout_loss(model, blocks, progress=False) == loss
    assert not first.exists()
    stored = "\n".join(path.read_text() for path in (moved / "results").rglob("*.json"))
    for local in (str(tmp_path), str(Path.home()), socket.gethostname(), getpass.getuser(), "site-packages"):
        assert f'"{local}' not in stored and f"{local}/" not in stored, local


def test_profiles_and_local_paths_enter_keys_by_content(tmp_path):
    model = tiny_model("llama", num_layers=2)
    profile = profile_distances(model, torch.randint(0, 256, (2, 8)), progress=False)
    assert key_part(profile) == key_part(dataclasses.replace(profile, model_name="/somewhere/else/model"))
    assert key_part(profile) != key_part(dataclasses.replace(profile, token="all"))
    for where in ("a", "b"):
        (tmp_path / where / "sub").mkdir(parents=True)
        (tmp_path / where / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 10)
    assert key_part(str(tmp_path / "a")) == key_part(tmp_path / "b") == {"content": path_digest(tmp_path / "a")}
    (tmp_path / "b" / "sub" / "weights.bin").write_bytes(b"\x00\x02" * 10)
    assert key_part(tmp_path / "a") != key_part(tmp_path / "b")
    assert key_part("smollm2-135m") == "smollm2-135m" and key_part("sotu") == "sotu"


def test_entries_computed_together_are_each_stored_and_read_back(isolated_cache):
    calls = []

    def compute(names):
        calls.append(list(names))
        return {name: {"value": len(name)} for name in names}

    keys = {"ab": {"k": 1}, "abc": {"k": 2}}
    assert cached_batch("demo", keys, compute, encode=dict, decode=dict) == {"ab": {"value": 2}, "abc": {"value": 3}}
    more = {**keys, "abcd": {"k": 3}}
    assert cached_batch("demo", more, compute, encode=dict, decode=dict)["abcd"] == {"value": 4}
    assert calls == [["ab", "abc"], ["abcd"]]
    assert cached("demo", {"k": 2}, lambda: {"value": 0}, encode=dict, decode=dict) == {"value": 3}
