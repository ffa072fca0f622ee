"""Scoring only what is scored: lm-eval's HFLM with the LM head applied at the continuation positions alone.

For a log-likelihood request (context, continuation) lm-eval's ``HFLM`` runs the whole model on the padded batch,
computes the LM head and a log-softmax over the vocabulary at every position of every row, and then keeps the
rows of the positions that predict a continuation token (``_select_cont_toks``). With a 152k vocabulary and
5-shot MMLU prompts of several hundred tokens, that head is most of the work and nearly all of it is discarded.

`ContinuationHFLM` runs the decoder once on the same padded batch, gathers the hidden states at the positions
that predict continuation tokens, and applies the head there only, with the architecture's final logit
processing (Gemma 3's ``final_logit_softcapping``) and the same log-softmax (``softmax_dtype``) and autocast as
lm-eval. Request ordering, batching, the one-token-continuation reuse of logits ("contexts" grouping), left
truncation, the greedy check and the partial cache all follow ``HFLM._loglikelihood_tokens`` of lm-eval 0.4, so
every request gets the same log-likelihood (up to float rounding of the head's matrix product) and the same
is_greedy. Models whose head this module does not know (unsupported families, prompt-learning PEFT adapters),
seq2seq models and ``batch_size="auto"`` take lm-eval's own path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


class ContinuationHFLM(HFLM):
    """lm-eval's HFLM that computes the LM head and log-softmax only where a continuation token is scored.

    `score_continuations_only` False (or `stock_scoring()`) gives lm-eval's own computation, for comparisons.
    """

    score_continuations_only = True

    def _loglikelihood_tokens(
        self, requests: list[Request], disable_tqdm: bool = False, override_bs: int | None = None
    ) -> list[tuple[float, bool]]:
        head = split_head(self.model) if self.score_continuations_only else None
        if head is None or self.backend != "causal" or self.batch_size == "auto":
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        order = Collator(
            requests,
            sort_fn=_longest_first,
            group_by="contexts" if self.logits_cache else None,
            group_fn=_shared_prefix,
        )
        answers: list[tuple[float, bool]] = []
        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0, desc="Running loglikelihood requests")
        for chunk in order.get_batched(n=self.batch_size):
            scored = self._continuation_logprobs(head, [(context, continuation) for _, context, continuation in chunk])
            for (request_str, context, continuation), logprobs in zip(chunk, scored, strict=True):
                logprobs = logprobs.unsqueeze(0)  # [1, continuation length, vocab]
                greedy = logprobs.argmax(dim=-1)
                for key, tokens, shared in order.get_cache(
                    req_str=request_str, cxt_toks=context, cont_toks=continuation, logits=logprobs
                ):
                    target = torch.tensor(tokens, dtype=torch.long, device=shared.device).unsqueeze(0)
                    exact = bool((greedy[:, -target.shape[1] :] == target).all())
                    picked = torch.gather(shared, 2, target.unsqueeze(-1)).squeeze(-1)
                    answer = (float(picked.sum()), exact)
                    answers.append(answer)
                    if key is not None:  # loglikelihood_rolling's windows carry none
                        self.cache_hook.add_partial("loglikelihood", key, answer)
                    bar.update(1)
        bar.close()
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
        with (
            torch.no_grad(),
            torch.autocast(
                device_type=self.device.type,
                dtype=self.mixed_precision_dtype,
                enabled=self.mixed_precision_dtype is not None,
            ),
        ):
            hidden = head.decoder(input_ids=batch, use_cache=False).last_hidden_state
            picked = hidden.reshape(-1, hidden.shape[-1])[rows.to(hidden.device)]
            logits = head.logits(picked.unsqueeze(0)).squeeze(0)
        logprobs = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        return list(logprobs.split([len(continuation) for _, continuation in pairs]))


@contextlib.contextmanager
def stock_scoring() -> Iterator[None]:
    """Within the block, `ContinuationHFLM` scores as lm-eval's HFLM does (the head at every position): for
    benchmarks and tests that compare the two."""
    before = ContinuationHFLM.score_continuations_only
    ContinuationHFLM.score_continuations_only = False
    try:
        yield
    finally:
        ContinuationHFLM.score_continuations_only = before
