import os

import pytest
import torch

import layerprune as lp
from layerprune import machine, models
from layerprune.errors import InvalidInputError
from layerprune.models import DTYPE_ENV, quantization_config, resolve_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(DTYPE_ENV, raising=False)


@pytest.fixture
def native(monkeypatch):
    """Set whether this CPU computes bf16 natively."""
    return lambda flag: monkeypatch.setattr(models, "native_bf16_cpu", lambda: flag)


@pytest.mark.parametrize(
    ("device", "native_bf16", "expected"),
    [(CPU, True, torch.bfloat16), (CPU, False, torch.float32), (CUDA, False, torch.bfloat16)],
)
@pytest.mark.parametrize("auto", [None, "auto"])
def test_auto_is_bf16_on_cuda_and_native_cpus_else_float32(no_env, native, device, native_bf16, expected, auto):
    native(native_bf16)
    assert resolve_dtype(auto, device) == expected


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"), [(True, False, True), (False, True, True), (False, False, False)]
)
def test_native_bf16_follows_torch_cpu_probes(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert machine.native_bf16_cpu() is expected


def test_missing_torch_probes_mean_no_native_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert machine.native_bf16_cpu() is False


def test_machine_reports_native_bf16_and_drops_the_load_for_timings():
    info = machine.machine()
    assert list(info) == [
        "cpu",
        "cores",
        "torch threads",
        "cpu capability",
        "native bf16",
        "memory GiB",
        "gpu",
        "load average (1 min)",
        "python",
        "torch",
        "transformers",
    ]
    assert isinstance(info["native bf16"], bool)
    assert "load average (1 min)" not in machine.timing_machine()
    assert machine.describe_machine().startswith(f"cpu: {info['cpu']}, cores: ")
    assert "bf16" in machine.machine_line() and machine.cpu_name() in machine.machine_line()


def test_explicit_dtype_beats_the_environment_which_beats_auto(monkeypatch, native):
    native(True)
    monkeypatch.setenv(DTYPE_ENV, "float32")
    assert resolve_dtype(None, CPU) == torch.float32
    assert resolve_dtype("auto", CUDA) == torch.float32
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype(torch.float16, CPU) == torch.float16
    monkeypatch.setenv(DTYPE_ENV, "auto")
    assert resolve_dtype(None, CPU) == torch.bfloat16
    monkeypatch.setenv(DTYPE_ENV, "")
    assert resolve_dtype(None, CPU) == torch.bfloat16


@pytest.mark.parametrize("bad", ["int8", torch.int64, "float33", "Tensor"])
def test_bad_dtypes_are_one_clear_error(no_env, bad):
    with pytest.raises(InvalidInputError, match=r"dtype .* is not a floating-point torch dtype \(use 'auto'"):
        resolve_dtype(bad, CPU)


def test_bad_environment_dtype_names_the_variable(monkeypatch):
    monkeypatch.setenv(DTYPE_ENV, "int8")
    with pytest.raises(InvalidInputError, match=rf"{DTYPE_ENV}='int8' is not a floating-point torch dtype"):
        resolve_dtype(None, CPU)
    assert resolve_dtype("float32", CPU) == torch.float32  # an explicit dtype never reads it


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_4bit_computes_and_stores_in_the_model_dtype(dtype):
    config = quantization_config("4bit", dtype)
    assert config.bnb_4bit_compute_dtype == dtype and config.bnb_4bit_quant_storage == dtype


@pytest.fixture(scope="module")
def tiny_in_both_dtypes():
    return {dtype: lp.load_model("tiny-llama", device="cpu", dtype=dtype)[0] for dtype in ("float32", "bfloat16")}


def test_tiny_model_loads_in_both_dtypes_with_different_identities(tiny_in_both_dtypes):
    fp32, bf16 = tiny_in_both_dtypes["float32"], tiny_in_both_dtypes["bfloat16"]
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bf16(ids).logits.float(), fp32(ids).logits, atol=0.05, rtol=0.05)
    assert lp.model_identity(fp32) != lp.model_identity(bf16)


def test_environment_chooses_the_dtype_of_load_model(monkeypatch):
    monkeypatch.setenv(DTYPE_ENV, "bfloat16")
    assert lp.load_model("tiny-llama", device="cpu")[0].dtype == torch.bfloat16


def test_4bit_bfloat16_forward_and_backward_on_cpu():
    import bitsandbytes as bnb

    model, _ = lp.load_model("tiny-llama", device="cpu", dtype="bfloat16", quantization="4bit")
    linear = model.model.layers[0].mlp.up_proj
    assert isinstance(linear, bnb.nn.Linear4bit) and linear.compute_dtype == torch.bfloat16
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    embeddings = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    model.train()
    loss = model(inputs_embeds=embeddings, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(embeddings.grad).all() and embeddings.grad.abs().sum() > 0


@pytest.mark.parametrize("command", ["profile", "prune", "heal", "merge", "evaluate"])
def test_commands_that_load_models_take_dtype_auto_by_default(command):
    from layerprune import cli

    required = {
        "profile": ["--model", "m", "--out", "p.json"],
        "prune": ["--model", "m", "--n", "1", "--out", "o"],
        "heal": ["--model", "m", "--out", "o"],
        "merge": ["--heal-dir", "h"],
        "evaluate": [],
    }[command]
    parser = cli.build_parser()
    assert parser.parse_args([command, *required]).dtype == "auto"
    assert parser.parse_args([command, *required, "--dtype", "bfloat16"]).dtype == "bfloat16"


def test_profile_command_records_the_dtype_in_the_model_identity(tmp_path, capsys, no_env):
    import json

    from layerprune import cli

    corpus = tmp_path / "texts"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 5)
    identities = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.json"
        argv = ["profile", "--model", "tiny-llama", "--device", "cpu", "--dtype", dtype, "--corpus", str(corpus)]
        assert cli.main([*argv, "--block-size", "16", "--max-blocks", "2", "--out", str(out)]) == 0
        identities[dtype] = json.loads(out.read_text())["model_identity"]
    assert identities["float32"] != identities["bfloat16"]
    argv = ["profile", "--model", "tiny-llama", "--dtype", "int8", "--out", str(tmp_path / "int8.json")]
    assert cli.main(argv) == 2
    assert "dtype 'int8' is not a floating-point torch dtype" in capsys.readouterr().err


def test_heal_dtype_reaches_the_loader_through_the_environment_only_while_it_runs(no_env):
    import argparse

    from layerprune.cli.heal_commands import in_dtype

    seen = []
    run = in_dtype(lambda args: seen.append(resolve_dtype(None, CPU)))
    run(argparse.Namespace(dtype="float16"))
    assert seen == [torch.float16] and DTYPE_ENV not in os.environ
    with pytest.raises(InvalidInputError, match="dtype 'int8'"):
        run(argparse.Namespace(dtype="int8"))
    assert len(seen) == 1
