import argparse
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerprune.errors import InvalidInputError
from layerprune.healing import CPU_DEFAULTS, PAPER_SETTINGS, BlockSampler, heal, training
from layerprune.healing.checkpoints import checkpoint_steps
from layerprune.healing.merging import merge, save_merged
from layerprune.healing.training import load_base
from layerprune.models import load_causal_lm, quantized_model
from layerprune.surgery import prune
from layerprune.tiny import TINY_FAMILIES, byte_tokenizer, tiny_model

PRUNED = {"original_num_layers": 6, "removed_layers": [3, 4], "strategy": "last", "steps": []}
TEXT = "the quick brown fox jumps over the lazy dog; seven wizards hex jolly vampires. " * 30
FFN = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models train fastest on one thread; two threads on a busy 2-core machine can be 100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pruned_tiny(family: str = "llama"):
    """A 4-layer tiny model standing in for a pruned one (hidden 64: bitsandbytes 4-bit needs it on some CPUs)."""
    model = tiny_model(family, num_layers=4, hidden=64)
    model.config.layerprune = dict(PRUNED)
    return model


def quick(model, blocks, **options):
    settings = dict(rank=8, lr=1e-2, steps=30, batch_size=4, warmup=3, progress=False)
    return heal(model, byte_tokenizer(), blocks, **(settings | options))


@pytest.fixture(scope="module")
def blocks(tokenizer):
    ids = tokenizer(TEXT)["input_ids"]
    return torch.tensor(ids[: 16 * 32]).view(16, 32)


@pytest.fixture(scope="module")
def healed_4bit(blocks):
    return quick(pruned_tiny(), blocks, quantization="4bit", eval_blocks=blocks[:4])


@pytest.fixture(scope="module")
def plain_input():
    return pruned_tiny()


@pytest.fixture(scope="module")
def healed_plain(plain_input, blocks):
    return quick(plain_input, blocks, quantization=None, steps=10)


def lora_names(model):
    return {name for name, _ in model.named_parameters() if "lora_" in name}


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_qlora_quantizes_to_4bit_and_trains_only_lora(healed_4bit):
    import bitsandbytes as bnb

    model = healed_4bit.model
    layers = model.get_base_model().model.layers
    assert len(layers) == 4 and model.get_base_model().config.num_hidden_layers == 4
    for layer in layers:
        assert isinstance(layer.self_attn.q_proj, bnb.nn.Linear4bit)
        for suffix in FFN:
            module = layer.get_submodule(suffix)
            assert isinstance(module.get_base_layer(), bnb.nn.Linear4bit)
            assert module.lora_A["default"].weight.shape[0] == 8
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == lora_names(model) and len(trainable) == 4 * 3 * 2
    assert all(layer.mlp.up_proj.lora_B["default"].weight.abs().sum() > 0 for layer in layers)


def test_loss_falls_when_memorising_a_repeated_text(healed_4bit):
    losses = healed_4bit.losses
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < losses[0] - 0.5
    assert healed_4bit.heldout_after.loss < healed_4bit.heldout_before.loss - 0.5
    assert healed_4bit.tokens == 30 * 4 * 32 and healed_4bit.tokens_per_second > 0


def test_schedule_warms_up_then_decays_by_cosine(healed_4bit):
    rates = healed_4bit.learning_rates
    assert rates[0] == 0 and rates[3] == pytest.approx(1e-2) and max(rates) == pytest.approx(1e-2)
    assert all(a >= b for a, b in itertools.pairwise(rates[3:])) and rates[-1] < 1e-4


def test_plain_lora_leaves_base_and_input_weights_unchanged(plain_input, healed_plain):
    reference = pruned_tiny().state_dict()
    assert all(torch.equal(tensor, reference[name]) for name, tensor in plain_input.state_dict().items())
    assert not lora_names(plain_input)
    healed = {n.replace(".base_layer", ""): p for n, p in healed_plain.model.get_base_model().named_parameters()}
    for name, param in healed.items():
        if "lora_" in name:
            assert param.requires_grad
        else:
            assert not param.requires_grad and torch.equal(param, reference[name]), name
    assert all(healed[n].abs().sum() > 0 for n in healed if "lora_B" in n)


def test_same_seed_same_run_other_seed_other_run(blocks):
    first, second = (quick(pruned_tiny(), blocks, quantization=None, steps=4) for _ in range(2))
    other = quick(pruned_tiny(), blocks, quantization=None, steps=4, seed=1)
    assert first.losses == second.losses and first.losses != other.losses
    for (name, a), (_, b) in zip(first.model.named_parameters(), second.model.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_block_sampler_covers_every_block_once_per_epoch():
    sampler = BlockSampler(10, 4, seed=0)
    first_epoch = torch.cat([sampler.indices(0), sampler.indices(1), sampler.indices(2)[:2]])
    assert sorted(first_epoch.tolist()) == list(range(10))
    assert torch.equal(BlockSampler(10, 4, seed=0).indices(7), sampler.indices(7))


def test_plain_merge_matches_adapter_and_reloads_with_transformers(healed_plain, blocks, tmp_path, tokenizer):
    merged = merge(healed_plain)
    ids = blocks[:2]
    healed_plain.model.eval()
    torch.testing.assert_close(logits(merged, ids), logits(healed_plain.model, ids), atol=1e-5, rtol=0)
    assert not lora_names(merged) and merged.config.num_hidden_layers == 4
    path = save_merged(merged, tmp_path / "merged", tokenizer)
    reloaded = AutoModelForCausalLM.from_pretrained(path)
    assert torch.equal(logits(reloaded, ids), logits(merged, ids))
    record = reloaded.config.layerprune
    assert record["removed_layers"] == [3, 4] and record["healing"]["rank"] == 8
    assert record["healing"]["merged"]["base_weights"] == "full precision"
    card = (path / "README.md").read_text()
    assert "Removed 2 of 6 layers: [3, 4] (strategy: last)" in card
    assert "LoRA rank 8, alpha 8" in card and "10 steps" in card and "learning rate 0.01" in card


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_4bit_merge_matches_the_4bit_adapter_model(family, blocks, healed_4bit):
    """The merged weights are dequant(NF4) + scale * B @ A, exactly what the 4-bit layers compute with
    (they dequantize to float32, then matmul): only float summation order differs, ~1e-6. Merging into the
    original float weights instead would differ by the NF4 error, orders of magnitude more (checked below).
    GPT-2 covers Conv1D layers, stored transposed."""
    result = healed_4bit if family == "llama" else quick(pruned_tiny(family), blocks, quantization="4bit", steps=4)
    merged = merge(result)
    ids = blocks[:2]
    adapter = logits(result.model, ids)
    torch.testing.assert_close(logits(merged, ids), adapter, atol=1e-4, rtol=1e-4)
    original = merged.state_dict() | {k: v for k, v in pruned_tiny(family).state_dict().items() if "mlp" not in k}
    merged.load_state_dict(original)
    assert (logits(merged, ids) - adapter).abs().max() > 1e-3
    assert merged.config.layerprune["healing"]["merged"]["base_weights"] == "dequantized 4bit"


def test_8bit_heal_uses_int8_layers_and_merges_within_int8_error(blocks):
    """LLM.int8 also quantizes activations (row-wise to int8, ~1/127 relative), so the merged float model
    matches the 8-bit adapter model only to about that precision."""
    import bitsandbytes as bnb

    result = quick(pruned_tiny(), blocks, quantization="8bit", steps=3)
    assert isinstance(result.model.get_base_model().model.layers[0].mlp.up_proj.get_base_layer(), bnb.nn.Linear8bitLt)
    adapter = logits(result.model, blocks[:2])
    merged = logits(merge(result), blocks[:2])
    assert (merged - adapter).abs().max() < 0.05 * adapter.abs().max()


def state_of(model) -> dict:
    """What healing and merging a (pruned) copy of a model must leave as it was in that model, bit for bit."""
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    return {
        "logits": logits(model, ids),
        "config": model.config.to_dict(),
        "state": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters(remove_duplicate=False)},
        "modules": [(name, type(module).__name__, module.training) for name, module in model.named_modules()],
    }


def assert_same_state(model, before: dict) -> None:
    after = state_of(model)
    assert torch.equal(after.pop("logits"), before["logits"])
    for name, tensor in after.pop("state").items():
        assert torch.equal(tensor, before["state"][name]) and tensor.dtype == before["state"][name].dtype, name
    assert after == {key: value for key, value in before.items() if key not in ("logits", "state")}


def storage_bytes(*models) -> int:
    """The bytes of the distinct storages holding the models' parameters and buffers."""
    storages = {}
    for model in models:
        for tensor in [*model.parameters(), *model.buffers()]:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


@pytest.mark.parametrize("quantization", [None, "4bit"])
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_healing_a_pruned_copy_and_merging_leave_the_source_as_it_was(family, quantization, blocks):
    model = tiny_model(family, num_layers=6, hidden=64)
    source = state_of(model)
    pruned = prune(model, [3, 4], strategy="last")
    copy_before = state_of(pruned)
    result = quick(pruned, blocks, quantization=quantization, steps=2, batch_size=2, warmup=1)
    base = result.model.get_base_model()
    if quantization is None:  # LoRA wraps a copy over the same frozen tensors: nothing of the model is copied
        wrapped = {name.replace(".base_layer", ""): p for name, p in base.named_parameters() if "lora_" not in name}
        for name, tensor in pruned.named_parameters():
            weight = wrapped[name]
            assert weight.data_ptr() == tensor.data_ptr() and weight is not tensor, name
    merged = merge(result)
    assert_same_state(pruned, copy_before)
    assert_same_state(model, source)
    assert merged.config.num_hidden_layers == 4
    shared = {t.data_ptr() for t in model.state_dict().values()}
    assert not any(t.data_ptr() in shared for t in merged.state_dict().values())  # merged weights are its own


def test_a_healing_base_adds_no_full_copy_of_the_weights():
    model = tiny_model("llama", num_layers=4, hidden=64)
    size = storage_bytes(model)
    assert storage_bytes(model, load_base(model, None, torch.device("cpu"))) == size
    for quantization, bound in [("4bit", 0.25), ("8bit", 0.3)]:
        added = storage_bytes(model, load_base(model, quantization, torch.device("cpu"))) - size
        assert 0 < added < bound * size, (quantization, added / size)


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
def test_quantizing_in_memory_gives_the_saved_and_reloaded_model(family, quantization):
    """`quantized_model` replaced saving the model and loading it through bitsandbytes: the same modules, the same
    quantized bytes (NF4 is packed into float storage, so bytes, not values, are compared), the same logits."""
    model = tiny_model(family, num_layers=4, hidden=64)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        reference = load_causal_lm(tmp, device="cpu", quantization=quantization)
    quantized = quantized_model(model, quantization, "cpu")
    types = [(name, type(module)) for name, module in quantized.named_modules()]
    assert types == [(name, type(module)) for name, module in reference.named_modules()]
    expected = reference.state_dict()
    assert quantized.state_dict().keys() == expected.keys()
    for name, tensor in quantized.state_dict().items():
        assert tensor.dtype == expected[name].dtype and tensor.shape == expected[name].shape, name
        assert torch.equal(tensor.reshape(-1).view(torch.uint8), expected[name].reshape(-1).view(torch.uint8)), name
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(logits(quantized, ids), logits(reference, ids))
    assert quantized.config.quantization_config.to_dict() == reference.config.quantization_config.to_dict()


HELPER = textwrap.dedent(
    """
    import sys, time, torch
    import layerprune.healing.training as healing
    from layerprune.tiny import byte_tokenizer, tiny_model

    save = healing.save_checkpoint  # slowed down, so that the test can kill it between checkpoints
    healing.save_checkpoint = lambda *a, **k: (save(*a, **k), time.sleep(1.0))[0]
    torch.manual_seed(0)
    blocks = torch.randint(0, 256, (16, 32))
    model = tiny_model("llama", num_layers=4, hidden=64)
    healing.heal(model, byte_tokenizer(), blocks, quantization="4bit", rank=4, lr=1e-2, steps=24, batch_size=2,
                 grad_accum=2, warmup=2, checkpoint_dir=sys.argv[1], checkpoint_every=4, progress=False)
    print("finished")
    """
)


def resumable_run(directory, **options):
    torch.manual_seed(0)
    blocks = torch.randint(0, 256, (16, 32))
    model = tiny_model("llama", num_layers=4, hidden=64)
    settings = dict(quantization="4bit", rank=4, lr=1e-2, steps=24, batch_size=2, grad_accum=2, warmup=2)
    return heal(model, byte_tokenizer(), blocks, **settings, checkpoint_dir=directory, checkpoint_every=4, **options)


def adapter_weights(result):
    return {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}


def test_killed_run_resumes_to_the_same_weights_and_losses(tmp_path):
    script = tmp_path / "helper.py"
    script.write_text(HELPER)
    directory = tmp_path / "checkpoints"
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(script), str(directory)], stdout=subprocess.PIPE, env=environment)
    deadline = time.monotonic() + 240
    while not [s for s in checkpoint_steps(directory) if s >= 12] and time.monotonic() < deadline:
        assert process.poll() is None, "the helper ended before it could be killed"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL and b"finished" not in process.stdout.read()
    steps = checkpoint_steps(directory)
    assert 12 <= steps[-1] < 24
    (directory / f"step-{steps[-1]:08d}" / "adapter.safetensors").write_bytes(b"damaged")
    with pytest.warns(RuntimeWarning, match="damaged checkpoint"):
        resumed = resumable_run(directory, progress=False)
    assert resumed.resumed_from == steps[-2]
    reference = resumable_run(tmp_path / "reference", progress=False)
    assert resumed.losses == pytest.approx(reference.losses, abs=1e-6) and len(resumed.losses) == 24
    expected = adapter_weights(reference)
    for name, tensor in adapter_weights(resumed).items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=0)


def test_finished_run_is_not_repeated_and_other_settings_are_refused(tmp_path, blocks):
    directory = tmp_path / "run"
    first = quick(pruned_tiny(), blocks, quantization=None, steps=3, checkpoint_dir=directory)
    again = quick(pruned_tiny(), blocks, quantization=None, steps=3, checkpoint_dir=directory)
    assert again.resumed_from == 3 and again.losses == first.losses
    with pytest.raises(InvalidInputError, match=r"other settings \(.*rank: 8 there, 4 now"):
        quick(pruned_tiny(), blocks, quantization=None, steps=3, rank=4, checkpoint_dir=directory)
    with pytest.raises(InvalidInputError, match="data_digest"):
        quick(pruned_tiny(), blocks.flip(0), quantization=None, steps=3, checkpoint_dir=directory)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps must be an integer >= 1, got 0"),
        ({"steps": -5}, "steps must be an integer >= 1, got -5"),
        ({"rank": 0}, "rank must be an integer >= 1, got 0"),
        ({"rank": -2}, "rank must be an integer >= 1, got -2"),
        ({"lr": 0}, "lr must be a positive number"),
        ({"quantization": "3bit"}, r"quantization '3bit' is not one of \('4bit', '8bit'\) or None"),
        ({"targets": ["mlp.nope_proj"]}, r"\['mlp.nope_proj'\] match no linear layer .* 'mlp.up_proj'"),
        ({"targets": "attention"}, "targets must be 'ffn' or a list"),
        ({"schedule": "step"}, "schedule 'step' is not one of"),
        ({"warmup": -1}, "warmup must be an integer >= 0, got -1"),
        ({"eval_every": 5}, "eval_every needs eval_blocks"),
        ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\)"),
    ],
)
def test_bad_settings_are_clear_errors(options, message, blocks):
    with pytest.raises(InvalidInputError, match=message):
        quick(pruned_tiny(), blocks, **({"quantization": None} | options))


def test_bad_blocks_and_models_are_clear_errors(blocks):
    empty = torch.empty(0, 32, dtype=torch.long)
    with pytest.raises(InvalidInputError, match=r"train_blocks must be a non-empty \[N, T\] tensor"):
        quick(pruned_tiny(), empty, quantization=None)
    with pytest.raises(InvalidInputError, match=r"token ids must lie in 0\.\.258"):
        quick(pruned_tiny(), blocks + 1000, quantization=None)
    with pytest.raises(InvalidInputError, match="model_or_path must be a transformers model"):
        quick(torch.nn.Linear(2, 2), blocks, quantization=None)


def test_presets_follow_the_paper():
    assert PAPER_SETTINGS["llama-2-7b"].rank == 2 and PAPER_SETTINGS["llama-2-7b"].lr == 3e-4
    assert (PAPER_SETTINGS["llama-2-70b"].rank, PAPER_SETTINGS["llama-2-70b"].lr) == (8, 3e-5)
    assert (PAPER_SETTINGS["mistral-7b"].rank, PAPER_SETTINGS["mistral-7b"].lr) == (4, 3e-6)
    assert (PAPER_SETTINGS["phi-2"].rank, PAPER_SETTINGS["phi-2"].lr) == (64, 2e-4)
    paper = PAPER_SETTINGS["other"]
    assert (paper.rank, paper.steps, paper.batch_size * paper.grad_accum, paper.warmup) == (64, 5000, 16, 100)
    assert paper.quantization == CPU_DEFAULTS.quantization == "4bit"


@pytest.fixture(scope="module")
def model_and_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("heal-cli")
    pruned_tiny().save_pretrained(root / "model")
    byte_tokenizer().save_pretrained(root / "model")
    (root / "corpus").mkdir()
    for index in range(5):
        (root / "corpus" / f"doc{index}.txt").write_text(TEXT[index * 7 :])
    return root


def cli(*argv):
    from layerprune.cli.heal_commands import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    args.run(args)


HEAL_OPTIONS = ("--steps", "4", "--rank", "4", "--batch-size", "2", "--grad-accum", "2", "--warmup", "1")


def test_cli_heals_merges_and_writes_its_outputs(model_and_corpus, tmp_path):
    root = model_and_corpus
    out = tmp_path / "healed"
    options = ("--model", str(root / "model"), "--corpus", str(root / "corpus"), "--out", str(out))
    cli("heal", *options, *HEAL_OPTIONS, "--block-size", "32", "--eval-blocks", "4", "--merge")
    summary = json.loads((out / "heal.json").read_text())
    assert summary["healing"]["quantization"] == "4bit" and len(summary["losses"]) == 4
    assert (out / "adapter" / "adapter_config.json").is_file() and checkpoint_steps(out / "checkpoints") == [4]
    cli("merge", "--heal-dir", str(out), "--out", str(tmp_path / "again"))
    ids = torch.randint(0, 256, (1, 16))
    first = AutoModelForCausalLM.from_pretrained(out / "merged")
    second = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    assert torch.equal(logits(first, ids), logits(second, ids))
    assert "Removed 2 of 6 layers" in (tmp_path / "again" / "README.md").read_text()


@pytest.mark.integration
def test_two_processes_heal_like_one(model_and_corpus, tmp_path):
    """Data parallel on 2 CPU processes (gloo): each takes half of every step's blocks and gradients are summed,
    so with dropout 0 the loss log equals a single process's up to float summation order."""
    root = model_and_corpus
    common = ("--model", str(root / "model"), "--corpus", str(root / "corpus"), *HEAL_OPTIONS)
    common += ("--block-size", "32", "--eval-blocks", "4", "--dropout", "0")
    launch = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, "-m", "layerprune.healing.distributed", *common, "--out", str(tmp_path / "two")]
    subprocess.run(command, check=True, timeout=300, capture_output=True)
    from layerprune.healing.distributed import main

    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    two, one = (json.loads((tmp_path / name / "heal.json").read_text()) for name in ("two", "one"))
    assert two["healing"]["num_processes"] == 2 and one["healing"]["num_processes"] == 1
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    assert two["evaluations"][-1]["loss"] == pytest.approx(one["evaluations"][-1]["loss"], rel=1e-5)


def test_a_model_card_credits_the_embedded_base_model():
    from layerprune.healing.merging import model_card

    config = tiny_model("llama").config
    assert "## Base model" not in model_card(config)
    config.name_or_path = "qwen2.5-coder-1.5b"
    card = model_card(config)
    assert "Qwen team (Alibaba Cloud)" in card and "Apache License" in card


def test_healing_controls_heal_the_unpruned_model_alike(isolated_cache, blocks, tokenizer):
    """Chapter 3's controls on a tiny model: the pruned and the unpruned model healed with the same blocks and
    settings, each scored on every corpus; the net gain subtracts what the unpruned model gains."""
    from layerprune.loss import heldout_loss
    from layerprune.study.steps import healing_controls

    model = tiny_model("llama", num_layers=4, hidden=64)
    pruned = prune(model, [2], strategy="last")
    settings = dict(quantization=None, rank=2, lr=1e-2, steps=3, batch_size=4, warmup=1)
    heldout = {"text": blocks[:4], "other": blocks[4:8].flip(1)}
    rows = healing_controls(model, pruned, tokenizer, blocks, heldout, settings, batch_size=4)
    assert [(r["corpus"], r["domain"]) for r in rows] == [("text", "healing"), ("other", "other")]
    assert rows[0]["strategy"] == "last" and rows[0]["n"] == 1 and rows[0]["model layers"] == 4
    for row, held in zip(rows, heldout.values(), strict=True):
        assert row["unpruned"] == pytest.approx(heldout_loss(model, held, progress=False).loss)
        assert row["pruned"] == pytest.approx(heldout_loss(pruned, held, progress=False).loss)
        assert row["unpruned + healed"] != row["unpruned"]  # the control was healed too
        net = (row["pruned"] - row["pruned + healed"]) - (row["unpruned"] - row["unpruned + healed"])
        assert row["net gain"] == pytest.approx(net) and row["net recovered"] == pytest.approx(net / row["pruning gap"])
        assert row["net gain low"] < row["net gain"] < row["net gain high"]  # 4 blocks: a paired t interval
    assert healing_controls(model, pruned, tokenizer, blocks, heldout, settings, batch_size=4) == rows  # cached


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_gradient_checkpointing_heals_to_the_same_numbers(family, blocks, monkeypatch):
    model = tiny_model(family, num_layers=3)
    runs = [
        heal(model, None, blocks, quantization=None, rank=4, steps=3, batch_size=4, warmup=1, seed=0,
             progress=False, gradient_checkpointing=on)
        for on in (False, True, None)
    ]  # fmt: skip
    per_layer = training.saved_activation_bytes(model, 4, blocks.shape[1]) / 3
    monkeypatch.setattr(training, "KEPT_ACTIVATIONS", int(1.5 * per_layer))  # recompute layers 0 and 2 of 3
    runs.append(heal(model, None, blocks, quantization=None, rank=4, steps=3, batch_size=4, warmup=1, seed=0,
                     progress=False))  # fmt: skip
    checkpointed = [layer.gradient_checkpointing for layer in runs[-1].model.get_base_model().model.layers]
    assert checkpointed == [True, False, True]
    assert not any(layer.gradient_checkpointing for layer in runs[2].model.get_base_model().model.layers)  # a CPU
    lora = [{k: v for k, v in run.model.named_parameters() if "lora_" in k} for run in runs]
    assert all(
        run.losses == runs[0].losses and lora_k.keys() == lora[0].keys() for run, lora_k in zip(runs, lora, strict=True)
    )
    assert all(torch.equal(other[k], lora[0][k]) for other in lora[1:] for k in lora[0])


def test_a_cpu_recomputes_as_few_layers_as_keep_a_step_under_the_budget():
    small = tiny_model("llama", num_layers=4)
    per_token = 4 * (12 * small.config.hidden_size + 4 * small.config.intermediate_size) * 4  # float32
    saved = training.saved_activation_bytes(small, 4, 16)
    assert saved == 4 * 16 * per_token
    assert training.recompute_every(small, 4, 16, budget=saved) is None  # it fits: nothing recomputed
    assert training.recompute_every(small, 4, 16, budget=saved * 3 // 4) == 4  # layer 0 recomputed, three kept
    assert training.recompute_every(small, 4, 16, budget=saved // 2) == 3  # layers 0 and 3 recomputed, two kept
    assert training.recompute_every(small, 4, 16, budget=saved // 4) == 1  # no k keeps just one: all recomputed
    assert training.recompute_every(small, 4, 16, budget=0) == 1
