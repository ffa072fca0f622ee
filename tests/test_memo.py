import json

import torch

from layerprune.cache import cache_root
from layerprune.memo import cached, tensor_digest


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
