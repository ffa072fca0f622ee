"""The paper's claims and their criteria, written down before any result: for each claim, the criterion in the
paper's terms, the test, the margin (`statistics.MARGINS`) and why; and the four verdicts a criterion can give.
The ledger (`claims`) applies them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from .statistics import MARGINS

HELD, NOT_HELD, INCONCLUSIVE, UNTESTABLE = "held", "did not hold", "inconclusive", "not testable here"
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, UNTESTABLE)
"""The four verdicts. "inconclusive": the criterion was testable but the evidence shows neither that the claim held
nor that it did not (for example a plateau neither shown equivalent to the unpruned model nor shown to drop)."""
CLAIMS = {
    "a": "the most alike blocks sit deep in the network",
    "b": "the final layer is distinct: it changes the residual stream more than any other layer of the deeper half",
    "c": "QA accuracy holds, then collapses to chance at a model-dependent fraction of layers removed",
    "d": "healing restores the held-out loss far more than QA accuracy",
    "e": "before healing the similarity block beats the other ways of choosing layers; after healing it and the "
    "last-layers heuristic meet",
    "f": "larger models hold their accuracy to a larger fraction of layers removed",
}
DEEP = 0.5  # a block is deep when its first layer l* is at or past L/2: it lies in the deeper half
DEEP_SHARE = (0.75, 0.5)  # held when at least 75% of the blocks are deep, did not hold when fewer than 50% are


@dataclass(frozen=True)
class Criterion:
    """How one claim is judged, written down before any result: the criterion in the paper's terms, the test, the
    margin (`statistics.MARGINS`) and why."""

    claim: str
    criterion: str
    test: str
    margin: str
    reason: str


_ACC, _CHANCE, _LOSS = MARGINS["accuracy"], MARGINS["chance"], MARGINS["loss"]
CRITERIA: dict[str, Criterion] = {
    "a": Criterion(
        "a",
        "for every block size n of 10-50% of the L layers, the most alike block l*(n)..l*(n)+n-1 lies in the deeper "
        "half: its first layer l* >= L/2. Held when at least 75% of these blocks do, did not hold when fewer than "
        "50% do, inconclusive between",
        "count of blocks; bootstrap over the profiled sequences for the stability of l*",
        "-",
        "the paper: 'the optimal block to prune is found deep in the network'; a block that starts before L/2 also "
        "removes layers of the first half, so it is not a block of the deeper layers",
    ),
    "b": Criterion(
        "b",
        "D[1, L-1], the final layer's change, is larger than every other layer's of the deeper half (l >= L/2). "
        "Held when its 95% interval lies above theirs, did not hold when it is not the largest, inconclusive when "
        "it is the largest but the intervals overlap",
        "95% bootstrap intervals over the profiled sequences",
        "-",
        "the paper keeps the final layer in its heuristic because it changes the stream most; the first layers, "
        "which turn embeddings into the stream, are not the deep end the claim is about",
    ),
    "c": Criterion(
        "c",
        "removing the similarity block: the accuracy holds (each fraction removed before the collapse equivalent "
        "to the unpruned model's, at least one) and then collapses (from some fraction on, every larger fraction "
        "of the grid at chance). Did not hold when the first fraction removed already loses more accuracy than "
        "the margin; inconclusive when the plateau is neither shown equivalent nor shown to lose more than the "
        "margin, when the grid reaches no collapse, or when the curve rises above chance again after reaching it "
        "(non-monotone)",
        f"exact McNemar (Holm within the sweep) and two one-sided exact tests at +-{_ACC.value:.2f} against the "
        f"unpruned model on the same questions; a loss beyond the margin: resolved, with the 90% interval below "
        f"-{_ACC.value:.2f}; at chance: 90% Wilson upper bound < chance + {_CHANCE.value:.2f}",
        f"accuracy +-{_ACC.value:.2f}; chance + {_CHANCE.value:.2f}",
        f"{_ACC.reason}. At chance: {_CHANCE.reason}",
    ),
    "d": Criterion(
        "d",
        "at each healed fraction with controls (the unpruned model healed with the same data and budget, and the "
        "held-out loss also measured on text of another domain than the healing corpus), the share of the pruning "
        "loss gap that healing wins back on the other domain, net of what the same healing gives the unpruned "
        "model there, is larger than the share of the QA accuracy won back. A domain recovers where that net "
        "gain exceeds the loss margin and its 95% interval over the held-out blocks excludes zero. Held when at "
        "every controlled fraction the other domain recovers and its share exceeds the accuracy's; did not hold "
        "when at every controlled fraction either the healing domain recovers and the other domain's interval lies "
        "below the margin (healing only fit its domain) or the accuracy recovers as large a share; inconclusive "
        "otherwise (the fractions disagree, pruning costs the other domain no more than the margin, the other "
        "domain's recovery is neither resolved nor ruled out, the two shares are not resolved apart, or pruning "
        "lost no accuracy); not testable here where a model has no controls. A share is compared by its 95% "
        "interval (its gain's interval over the pruning gap): larger where it lies above the other's",
        f"net loss recovered per domain, (pruned - healed) - (unpruned - unpruned healed), against +-"
        f"{_LOSS.value:.2f} nats (paired t interval over the held-out blocks) and as a share of pruned - unpruned; "
        "the healed-minus-pruned accuracy by exact McNemar",
        f"loss +-{_LOSS.value:.2f} nats",
        "the paper: healing 'restores' the loss curve to a smooth rise while QA accuracy recovers little. Held-out "
        "text of the healing corpus's own domain would credit healing with fitting that domain; text of another "
        "domain, and the unpruned model healed alike, separate repairing the cut from adapting to the healing "
        f"text. {_LOSS.reason}",
    ),
    "e": Criterion(
        "e",
        "before healing, the similarity block's held-out loss is lower than that of every other strategy the book "
        "runs (last, random over distinct blocks, block influence) by more than the loss margin, resolved, and "
        "'last' is not resolved above it on QA; after healing, 'last' and the similarity block are equivalent on "
        "QA. Did not hold when some strategy's loss is resolved lower by more than the margin (random: its mean "
        "over the distinct blocks drawn), when 'last' is resolved above it on QA, or when the healed pair is "
        "shown different; inconclusive otherwise (a gap not resolved or within the margin, a healed pair neither "
        "equivalent nor different, or no healed pair above chance)",
        f"loss gaps, block by block on the same held-out blocks: paired t test and interval, and two one-sided "
        f"tests at +-{_LOSS.value:.2f} nats; QA by exact McNemar (Holm) and two one-sided exact tests at "
        f"+-{_ACC.value:.2f}",
        f"loss +-{_LOSS.value:.2f} nats; accuracy +-{_ACC.value:.2f}",
        f"{_LOSS.reason}. {_ACC.reason}",
    ),
    "f": Criterion(
        "f",
        "on one task on which every model of the size ladder is resolved above chance unpruned, the collapse "
        "fraction of (c) (n/L actually removed) does not decrease with model size and the largest model's is "
        "larger than the smallest's. A collapse the grid does not reach lies past its last fraction, later than "
        "any collapse within it. Did not hold when a larger model collapses at a smaller fraction; inconclusive "
        "when all collapse at the same fraction; not testable here when a collapse beyond the grid leaves the "
        "order open",
        "the collapse of (c) for each model (90% Wilson bound against chance + margin)",
        f"chance + {_CHANCE.value:.2f}",
        "the paper's collapse fractions grow with size (about 20% for Qwen, 25% Phi-2, 35% Mistral-7B, 45-55% "
        "Llama-2-70B); a collapse beyond the grid is compared only where being later than the grid's end decides",
    ),
}


def criteria_table() -> pd.DataFrame:
    """`CRITERIA` as the table chapter 7 shows."""
    return pd.DataFrame([asdict(criterion) for criterion in CRITERIA.values()])
