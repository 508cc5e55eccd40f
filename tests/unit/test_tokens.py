"""Token lengths' numbers: percentiles, round-width histograms, what a cutoff truncates or leaves untrainable, the
trained-on segments of a rendered row, and the histogram as text bars."""

from __future__ import annotations

import pytest

from studio.tokens import Bin, Lengths, Segment, bars, bin_width, common_prefix, histogram, percentile, segments


@pytest.mark.parametrize(("q", "expected"), [(50, 50), (95, 95), (99, 99), (100, 100), (1, 1), (0.1, 1)])
def test_nearest_rank_percentiles(q: float, expected: int) -> None:
    assert percentile(list(range(1, 101)), q) == expected


def test_percentile_of_nothing_is_zero_and_of_one_is_it() -> None:
    assert (percentile([], 50), percentile([7], 99)) == (0, 7)


@pytest.mark.parametrize(("largest", "bins", "width"), [(10, 20, 1), (100, 20, 5), (1000, 20, 50), (3000, 20, 200)])
def test_bin_widths_are_round(largest: int, bins: int, width: int) -> None:
    assert bin_width(largest, bins) == width


def test_histogram_covers_shortest_to_longest_keeping_empty_bins() -> None:
    found = histogram([100, 101, 104, 120], bins=5)
    assert found == [Bin(low=100, high=105, rows=3), Bin(low=105, high=110, rows=0), Bin(low=110, high=115, rows=0),
                     Bin(low=115, high=120, rows=0), Bin(low=120, high=125, rows=1)]  # fmt: skip
    assert histogram([]) == []


def test_lengths_count_truncated_and_untrainable_against_the_cutoff() -> None:
    lengths = Lengths(max_length=100)
    for whole, prompt in [(50, 40), (100, 90), (101, 90), (300, 100), (250, 120)]:
        lengths.add(whole, prompt)
    stats = lengths.stats(dropped=2, bins=10)
    assert (stats.rows, stats.truncated, stats.untrainable, stats.dropped) == (5, 3, 2, 2)
    assert (stats.p50, stats.p95, stats.p99, stats.max, stats.mean) == (101, 300, 300, 300, 160.2)
    assert sum(b.rows for b in stats.bins) == 5


def test_no_rows_give_zeros() -> None:
    stats = Lengths(max_length=8).stats()
    assert (stats.rows, stats.p50, stats.max, stats.bins) == (0, 0, 0, [])


def test_segments_mark_the_answer_trained_and_what_the_cutoff_cuts() -> None:
    text = "PROMPT:ANSWER!"
    assert segments(text, prompt_chars=7, kept_chars=len(text)) == [
        Segment(text="PROMPT:", trained=False),
        Segment(text="ANSWER!", trained=True),
    ]
    assert segments(text, prompt_chars=7, kept_chars=10) == [
        Segment(text="PROMPT:", trained=False),
        Segment(text="ANS", trained=True),
        Segment(text="WER!", trained=True, kept=False),
    ]
    assert segments(text, prompt_chars=7, kept_chars=3) == [
        Segment(text="PRO", trained=False),
        Segment(text="MPT:", trained=False, kept=False),
        Segment(text="ANSWER!", trained=True, kept=False),
    ]


def test_common_prefix() -> None:
    assert (common_prefix("abcX", "abcY"), common_prefix("", "a"), common_prefix("ab", "ab")) == (3, 0, 2)


def test_bars_scale_to_the_fullest_bin_and_mark_the_cutoff() -> None:
    lengths = Lengths(max_length=12)
    for n in (1, 2, 2, 11):
        lengths.add(n, 0)
    lines = bars(lengths.stats(bins=3), width=4)
    assert lines == ["  0-5 ████ 3", " 5-10  0", "10-15 █ 1  ← max_length"]
