"""Scoring only what is scored: lm-eval's HFLM with the LM head applied at the continuation positions alone, and
each context computed once for all the continuations it is asked with.

For a log-likelihood request (context, continuation) lm-eval's ``HFLM`` runs the whole model on the padded batch,
computes the LM head and a log-softmax over the vocabulary at every position of every row, and then keeps the
rows of the positions that predict a continuation token (``_select_cont_toks``). With a 152k vocabulary and
5-shot MMLU prompts of several hundred tokens, that head is most of the work and nearly all of it is discarded.
And a multiple-choice question asks its context once per choice: ARC-Easy's four answers of a few tokens each
repeat a context about twice as long as all of them together, and lm-eval shares a pass only between
continuations that differ in their last token alone (MMLU's one-letter answers).

`ContinuationHFLM` puts all the requests that share a context into one packed row: the context, then each
continuation but its last token as a branch of its own, every branch attending to the context and to itself
(a 4-D attention mask) at the positions it has in its own sequence (position ids). The position that ends the
context predicts every continuation's first token; a branch's positions predict the rest. The head is applied at
those positions only, with the architecture's final logit processing (Gemma 3's ``final_logit_softcapping``)
and the same log-softmax (``softmax_dtype``) and autocast as lm-eval. So every request gets the log-likelihood
and is_greedy of lm-eval's own pass (up to float rounding), from the same attention over the same tokens at the
same positions. Rows are ordered longest first and batched as lm-eval batches (``batch_size`` rows a pass); rows
without branches take no mask, so MMLU's passes are lm-eval's, batch for batch. A request is scored alone, as lm-eval
scores it, where packing could change what it attends to: a prompt cut from the left to the model's length, a
position past a sliding attention window, an attention implementation other than SDPA. Models whose head this
module does not know (unsupported families, prompt-learning PEFT adapters), seq2seq models and
``batch_size="auto"`` take lm-eval's own path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import Collator
from lm_eval.models.utils_hf import pad_and_concat
from tqdm.auto import tqdm

from ..head import Head, split_head

Request = tuple[tuple[str, str], list[int], list[int]]


def _longest_first(request: Request) -> tuple[int, tuple[int, ...]]:
    """lm-eval's order: longest context + continuation first, ties by the tokens."""
    tokens = request[1] + request[2]
    return -len(tokens), tuple(tokens)


def _shared_prefix(request: Request) -> list[int]:
    """lm-eval's group of requests that differ in their last continuation token only."""
    return request[1] + request[2][:-1]


@dataclass(frozen=True)
class _PackedRow:
    """The requests `members` (indices) sharing `context`: the row is the context, then each member's
    continuation but its last token (its branch)."""

    context: tuple[int, ...]
    members: tuple[int, ...]
    branches: tuple[tuple[int, ...], ...]

    @property
    def tokens(self) -> list[int]:
        return [*self.context, *(token for branch in self.branches for token in branch)]


class ContinuationHFLM(HFLM):
    """lm-eval's HFLM that computes each context once per pass for all its continuations, and the LM head and
    log-softmax only where a continuation token is scored.

    `score_continuations_only` False (or `stock_scoring()`) gives lm-eval's own computation, for comparisons.
    """

    score_continuations_only = True

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        head = split_head(self.model) if self.score_continuations_only else None
        if head is None or self.backend != "causal" or self.batch_size == "auto":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        answers: list[tuple[float, bool] | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Running loglikelihood requests")
        limit = _packing_limit(head, self.max_length)
        packable = [_packable(context, continuation, limit) for _, context, continuation in requests]
        alone = [index for index, fits in enumerate(packable) if not fits]
        packed = _packed_rows(requests, [index for index, fits in enumerate(packable) if fits])
        for start in range(0, len(packed), self.batch_size):
            rows = packed[start : start + self.batch_size]
            scored = self._packed_logprobs(head, rows)
            members = [index for row in rows for index in row.members]
            for index, logprobs in zip(members, scored, strict=True):
                answers[index] = self._answer(requests[index], logprobs)
                bar.update(1)
        for index, answer in zip(alone, self._one_by_one(head, [requests[i] for i in alone], bar), strict=True):
            answers[index] = answer
        bar.close()
        return answers  # type: ignore[return-value]

    def _answer(self, request: Request, logprobs: torch.Tensor) -> tuple[float, bool]:
        """A request's log-likelihood and is_greedy from the log-probabilities at the positions predicting its
        continuation ([continuation length, vocab]); reported to lm-eval's partial cache."""
        request_str, _, continuation = request
        target = torch.tensor(continuation, dtype=torch.long, device=logprobs.device)
        exact = bool((logprobs.argmax(dim=-1) == target).all())
        answer = (float(logprobs.gather(1, target.unsqueeze(-1)).sum()), exact)
        if request_str is not None:  # loglikelihood_rolling's windows carry none
            self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return answer

    def _one_by_one(self, head: Head, requests: list[Request], bar: tqdm) -> list[tuple[float, bool]]:
        """The requests that cannot be packed, each in a row of its own, ordered and batched as lm-eval does
        (one-token continuations of one context share a pass)."""
        if not requests:
            return []
        order = Collator(
            requests,
            sort_fn=_longest_first,
            group_by="contexts" if self.logits_cache else None,
            group_fn=_shared_prefix,
        )
        answers: list[tuple[float, bool]] = []
        for chunk in order.get_batched(n=self.batch_size):
            scored = self._continuation_logprobs(head, [(context, continuation) for _, context, continuation in chunk])
            for (request_str, context, continuation), logprobs in zip(chunk, scored, strict=True):
                for key, tokens, shared in order.get_cache(
                    req_str=request_str, cxt_toks=context, cont_toks=continuation, logits=logprobs.unsqueeze(0)
                ):
                    answers.append(self._answer((key, context, tokens), shared.squeeze(0)))
                    bar.update(1)
        return order.get_original(answers)

    def _continuation_logprobs(self, head: Head, pairs: list[tuple[list[int], list[int]]]) -> list[torch.Tensor]:
        """Log-probabilities over the vocabulary at the positions predicting each continuation's tokens, one
        [continuation length, vocab] tensor per (context, continuation) pair, from one decoder pass over the
        right-padded batch (the input lm-eval builds: context + continuation without its last token, cut from the
        left to the model's length)."""
        inputs = [
            torch.tensor((context + continuation)[-(self.max_length + 1) :][:-1], dtype=torch.long, device=self.device)
            for context, continuation in pairs
        ]
        lengths = [len(tokens) for tokens in inputs]
        width = max(lengths)
        batch = pad_and_concat(width, inputs, padding_side="right")  # (it pads the list `inputs` in place)
        rows = torch.cat(
            [
                torch.arange(length - len(continuation), length) + index * width
                for index, (length, (_, continuation)) in enumerate(zip(lengths, pairs, strict=True))
            ]
        )
        return self._head_logprobs(head, batch, rows, [len(continuation) for _, continuation in pairs])

    def _packed_logprobs(self, head: Head, rows: Sequence[_PackedRow]) -> list[torch.Tensor]:
        """Log-probabilities at the positions predicting each member's continuation, member by member (row by
        row), from one decoder pass over the right-padded packed rows."""
        width = max(len(row.tokens) for row in rows)
        batch = torch.zeros(len(rows), width, dtype=torch.long)
        segments = torch.full((len(rows), width), -1, dtype=torch.long)  # 0 the context, j + 1 branch j, -1 padding
        positions = torch.zeros(len(rows), width, dtype=torch.long)
        picked, counts = [], []
        for r, row in enumerate(rows):
            batch[r, : len(row.tokens)] = torch.tensor(row.tokens)
            context = len(row.context)
            segments[r, :context] = 0
            positions[r, :context] = torch.arange(context)
            at = context
            for j, branch in enumerate(row.branches):
                segments[r, at : at + len(branch)] = j + 1
                positions[r, at : at + len(branch)] = torch.arange(context, context + len(branch))
                picked.append(r * width + torch.tensor([context - 1, *range(at, at + len(branch))]))
                counts.append(len(branch) + 1)
                at += len(branch)
        arguments = {}
        if any(branch for row in rows for branch in row.branches):
            arguments = {"attention_mask": _branch_mask(segments), "position_ids": positions}
        return self._head_logprobs(head, batch.to(self.device), torch.cat(picked), counts, **arguments)

    def _head_logprobs(
        self, head: Head, batch: torch.Tensor, rows: torch.Tensor, counts: list[int], **arguments: torch.Tensor
    ) -> list[torch.Tensor]:
        """The decoder over `batch`, the head and log-softmax at the flattened positions `rows`, split into
        pieces of `counts` rows."""
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            arguments = {name: value.to(self.device) for name, value in arguments.items()}
            hidden = head.decoder(input_ids=batch, use_cache=False, **arguments).last_hidden_state
            picked = hidden.reshape(-1, hidden.shape[-1])[rows.to(hidden.device)]
            logits = head.logits(picked.unsqueeze(0)).squeeze(0)
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        return list(logprobs.split(counts))


def _packing_limit(head: Head, max_length: int) -> int:
    """The longest context + continuation a request may have to be packed (0: none is): lm-eval's input is
    not cut (at most `max_length` + 1 tokens), every position lies within a sliding attention window (the mask of
    a packed row is full causal), and the model attends by SDPA, which takes the mask as built."""
    config = head.decoder.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return 0
    limit = max_length + 1
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if window is not None and (types is None or "sliding_attention" in types):
        limit = min(limit, int(window) + 1)  # the last input position is len - 2 <= window - 1
    return limit


def _packable(context: list[int], continuation: list[int], limit: int) -> bool:
    return bool(context) and bool(continuation) and len(context) + len(continuation) <= limit


def _packed_rows(requests: Sequence[Request], indices: Sequence[int]) -> list[_PackedRow]:
    """The requests `indices`, one row per context (members in their order), longest row first, ties by the
    tokens (lm-eval's order: MMLU's rows, contexts alone, fall in its very batches)."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    for index in indices:
        by_context.setdefault(tuple(requests[index][1]), []).append(index)
    rows = [
        _PackedRow(context, tuple(members), tuple(tuple(requests[i][2][:-1]) for i in members))
        for context, members in by_context.items()
    ]
    return sorted(rows, key=lambda row: (-len(row.tokens), tuple(row.tokens)))


def _branch_mask(segments: torch.Tensor) -> torch.Tensor:
    """[batch, 1, width, width] boolean attention mask of packed rows (True: attend): a position attends to the
    context and its own branch up to itself; padding to itself only (a row of SDPA with nothing to attend is NaN)."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segments.unsqueeze(2), segments.unsqueeze(1)
    allowed = causal & ((key == 0) | (key == query)) & (query >= 0)
    allowed |= torch.eye(width, dtype=torch.bool) & (query < 0)
    return allowed.unsqueeze(1)


@contextlib.contextmanager
def stock_scoring() -> Iterator[None]:
    """Within the block, `ContinuationHFLM` scores as lm-eval's HFLM does (the head at every position, a pass per
    context and continuation): for benchmarks and tests that compare the two."""
    before = ContinuationHFLM.score_continuations_only
    ContinuationHFLM.score_continuations_only = False
    try:
        yield
    finally:
        ContinuationHFLM.score_continuations_only = before
