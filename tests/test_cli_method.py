import re

import pytest

from layerprune import cli, load_model
from layerprune.cli import method_commands
from layerprune.similarity import DistanceProfile
from layerprune.tiny import byte_tokenizer, tiny_model

LAYERS = 4
SMALL = ["--block-size", "16", "--max-blocks", "3", "--batch-size", "2"]


@pytest.fixture(autouse=True)
def registered(monkeypatch, isolated_cache):
    """The method commands, registered as the package will register them."""
    if method_commands not in cli.COMMAND_GROUPS:
        monkeypatch.setattr(cli, "COMMAND_GROUPS", (*cli.COMMAND_GROUPS, method_commands))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-qwen2")
    tiny_model("qwen2", num_layers=LAYERS).save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("texts")
    for i in range(10):
        (path / f"doc{i:02d}.txt").write_text(f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * 5)
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_profile_then_select(capsys, tmp_path, model_dir, corpus):
    out = tmp_path / "profile.json"
    status, stdout, _ = _run(capsys, "profile", "--model", model_dir, "--corpus", corpus, *SMALL, "--out", out)
    assert status == 0 and str(out) in stdout
    profile = DistanceProfile.load(out)
    assert profile.num_layers == LAYERS and profile.num_sequences == 3 and profile.metric == "angular"
    status, stdout, _ = _run(capsys, "select", "--profile", out, "--n", 2)
    start = int(profile.curve(2).argmin())
    assert status == 0 and f"similarity: remove layers {start} {start + 1} (2 of 4)" in stdout
    status, stdout, _ = _run(capsys, "select", "--profile", out, "--fraction", 0.25, "--strategy", "last")
    assert status == 0 and "last: remove layers 2 (1 of 4)" in stdout


@pytest.mark.parametrize("strategy", ["similarity", "last", "block_influence"])
def test_prune_saves_a_loadable_pruned_model(capsys, tmp_path, model_dir, corpus, strategy):
    out = tmp_path / "pruned"
    args = ["prune", "--model", model_dir, "--n", 1, "--strategy", strategy, "--corpus", corpus, *SMALL]
    status, stdout, _ = _run(capsys, *args, "--out", out)
    assert status == 0 and f"{strategy}: remove layers" in stdout
    model, tokenizer = load_model(out, device="cpu")
    assert model.config.num_hidden_layers == LAYERS - 1 and len(model.config.layer_types) == LAYERS - 1
    assert model.config.layerprune["strategy"] == strategy
    assert tokenizer("ab")["input_ids"] == byte_tokenizer()("ab")["input_ids"]


def test_prune_with_a_saved_profile(capsys, tmp_path, model_dir, corpus):
    profile = tmp_path / "profile.json"
    assert _run(capsys, "profile", "--model", model_dir, "--corpus", corpus, *SMALL, "--out", profile)[0] == 0
    expected = DistanceProfile.load(profile).curve(2).argmin()
    status, stdout, _ = _run(
        capsys, "prune", "--model", model_dir, "--profile", profile, "--n", 2, "--out", tmp_path / "m"
    )
    assert status == 0 and f"remove layers {expected} {expected + 1}" in stdout
    assert load_model(tmp_path / "m", device="cpu")[0].config.layerprune["removed_layers"] == [expected, expected + 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n", 9], "--n 9: remove 1..3"),
        (["--n", 0], "--n 0: remove at least one layer"),
        (["--fraction", 0.05], r"--fraction 0.05 \(0 layers\)"),
        (["--fraction", 1.5], "fraction must be a number in"),
        (["--n", 1, "--corpus", "/no/such/texts"], "does not exist"),
        (["--n", 1, "--profile", "/no/such/profile.json"], "profile.json"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_files(capsys, tmp_path, model_dir, files_under, argv, message):
    out = tmp_path / "out" / "pruned"
    status, _, stderr = _run(capsys, "prune", "--model", model_dir, *argv, "--out", out)
    error = stderr.splitlines()[-1]
    assert status == 2 and error.startswith("layerprune prune: error: ") and re.search(message, error)
    assert not out.exists() and files_under(tmp_path) == set()


def test_prune_refuses_an_existing_out_dir_and_a_profile_of_another_model(capsys, tmp_path, model_dir, corpus):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    status, _, stderr = _run(capsys, "prune", "--model", model_dir, "--n", 1, "--out", existing)
    assert status == 2 and "already exists" in stderr and (existing / "keep.txt").read_text() == "mine"
    other = tmp_path / "other"
    tiny_model("qwen2", num_layers=LAYERS + 2).save_pretrained(other)
    byte_tokenizer().save_pretrained(other)
    profile = tmp_path / "other.json"
    assert _run(capsys, "profile", "--model", other, "--corpus", corpus, *SMALL, "--out", profile)[0] == 0
    status, _, stderr = _run(
        capsys, "prune", "--model", model_dir, "--profile", profile, "--n", 1, "--out", tmp_path / "x"
    )
    assert status == 2 and "6-layer model, not 4" in stderr and not (tmp_path / "x").exists()


def test_profile_refuses_a_directory_as_out(capsys, tmp_path, model_dir):
    status, _, stderr = _run(capsys, "profile", "--model", model_dir, "--out", tmp_path)
    assert status == 2 and "is a directory" in stderr


def test_select_reports_a_broken_profile(capsys, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    status, _, stderr = _run(capsys, "select", "--profile", broken, "--n", 1)
    assert status == 2 and "broken.json" in stderr and stderr.count("\n") == 1
