"""Token lengths of a chat dataset as a base model sees them: percentiles, a histogram, what a training cutoff
(``max_length``) would cut, and which part of a rendered row is trained on.

A row is rendered with the base model's chat template twice: whole (``length``) and without its last assistant turn,
with the generation prompt (``prompt``). Tokens past ``max_length`` are cut when training; a row is *truncated*
when ``length > max_length`` and has *no trainable tokens* when ``prompt >= max_length`` (the prompt alone fills
the cutoff, so no token of the answer survives). The answer's tokens, the last assistant turn, are what is trained
on.

Pure: values in, values out. Callers measure rows one at a time and keep only the integers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict


class Bin(BaseModel):
    model_config = ConfigDict(frozen=True)
    low: int  # tokens, inclusive
    high: int  # tokens, exclusive
    rows: int


class LengthStats(BaseModel):
    """What ``Lengths.stats`` says of a split's rows."""

    model_config = ConfigDict(frozen=True)
    rows: int  # rows measured (fit to train on)
    max_length: int
    p50: int
    p95: int
    p99: int
    max: int
    mean: float
    truncated: int  # longer than max_length: their ends are cut
    untrainable: int  # the prompt alone fills max_length: nothing of the answer is trained on
    dropped: int = 0  # rows not fit to train on (the Checker's problems): never measured
    bins: list[Bin] = []


class Segment(BaseModel):
    """A piece of a rendered row: ``trained`` when its tokens are learned from, ``kept`` unless the cutoff cuts it."""

    model_config = ConfigDict(frozen=True)
    text: str
    trained: bool
    kept: bool = True


def percentile(ordered: Sequence[int], q: float) -> int:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``ordered`` (sorted ascending); 0 when empty."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def bin_width(largest: int, bins: int) -> int:
    """A round width (1, 2, 5 × 10^k) that covers 0…``largest`` in about ``bins`` bins."""
    raw = max(1.0, largest / max(1, bins))
    scale = 10 ** math.floor(math.log10(raw))
    for step in (1, 2, 5, 10):
        if step * scale >= raw:
            return int(step * scale)
    return int(10 * scale)  # pragma: no cover  (the loop always returns)


def histogram(lengths: Sequence[int], bins: int = 20) -> list[Bin]:
    """Rows per band of token lengths, from the shortest to the longest, in round-width bins (empty bins kept, so
    the bars line up)."""
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    width = bin_width(high - low + 1, bins)
    start = low // width * width
    counts = [0] * ((high - start) // width + 1)
    for n in lengths:
        counts[(n - start) // width] += 1
    return [Bin(low=start + i * width, high=start + (i + 1) * width, rows=c) for i, c in enumerate(counts)]


@dataclass
class Lengths:
    """Collects each row's (whole, prompt) token counts; ``stats`` sums them up against ``max_length``."""

    max_length: int
    lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    untrainable: int = 0

    def add(self, length: int, prompt: int) -> None:
        self.lengths.append(length)
        if length > self.max_length:
            self.truncated += 1
        if prompt >= self.max_length:
            self.untrainable += 1

    def stats(self, *, dropped: int = 0, bins: int = 20) -> LengthStats:
        ordered = sorted(self.lengths)
        return LengthStats(
            rows=len(ordered),
            max_length=self.max_length,
            p50=percentile(ordered, 50),
            p95=percentile(ordered, 95),
            p99=percentile(ordered, 99),
            max=ordered[-1] if ordered else 0,
            mean=round(sum(ordered) / len(ordered), 1) if ordered else 0.0,
            truncated=self.truncated,
            untrainable=self.untrainable,
            dropped=dropped,
            bins=histogram(ordered, bins),
        )


def segments(text: str, *, prompt_chars: int, kept_chars: int) -> list[Segment]:
    """``text`` (a rendered row) cut where its prompt ends (``prompt_chars``: the rest is the trained answer) and
    where the cutoff falls (``kept_chars``: the rest is cut off); empty pieces left out."""
    prompt_chars = max(0, min(prompt_chars, len(text)))
    kept_chars = max(0, min(kept_chars, len(text)))
    cuts = sorted({0, prompt_chars, kept_chars, len(text)})
    found = []
    for start, end in itertools.pairwise(cuts):
        if end > start:
            found.append(Segment(text=text[start:end], trained=start >= prompt_chars, kept=end <= kept_chars))
    return found


def common_prefix(a: str, b: str) -> int:
    """How many leading characters ``a`` and ``b`` share (where a prompt's rendering stops matching the row's)."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def bars(stats: LengthStats, *, width: int = 40) -> list[str]:
    """The histogram as lines of text bars, the bin holding ``max_length`` marked."""
    if not stats.bins:
        return []
    most = max(b.rows for b in stats.bins) or 1
    label = max(len(f"{b.low}-{b.high}") for b in stats.bins)
    lines = []
    for b in stats.bins:
        bar = "█" * round(b.rows / most * width) if b.rows else ""
        cut = "  ← max_length" if b.low <= stats.max_length < b.high else ""
        lines.append(f"{f'{b.low}-{b.high}':>{label}} {bar} {b.rows}{cut}")
    return lines
