"""The streaming-quality study: its metrics and radio plans (the parts that need no model)."""

from __future__ import annotations

import numpy as np
import pytest

from eval.streaming_quality import radio_plan, score
from finetune.data.synthetic import GENRES, Segment

SEGMENTS = [Segment(0.0, 10.0, "rock"), Segment(10.0, 15.0, "jazz"), Segment(15.0, 20.0, "pop")]
ENDS = np.arange(8.0, 20.0, 1.0)  # hops at 8, 9, ..., 19 s: 12 hops, 12 s


def test_score_counts_accuracy_flips_and_latency_until_the_label_stays() -> None:
    # jazz is reported at 11 s, lost at 12 s and back from 13 s (latency 3 s); pop never follows (a miss)
    reported = ["rock", "rock", "rock", "jazz", "rock", "jazz", "jazz", "rock", "rock", "rock", "jazz", None]
    got = score(reported, ENDS, SEGMENTS, settle=2.0)
    assert got["accuracy"] == pytest.approx(5 / 12)  # rock at 8, 9; jazz at 11, 13, 14; nothing after 15 s
    assert got["steady_accuracy"] == pytest.approx(4 / 8)  # of 8, 9, 12, 13, 14, 17, 18, 19
    assert got["flips_per_min"] == pytest.approx(5 / (12 / 60))  # None does not count as a flip
    assert got["latency_s"] == pytest.approx((3.0 + 5.0) / 2)  # the miss counts as its segment's length
    assert got["missed"] == pytest.approx(0.5)
    assert got["true_switches_per_min"] == pytest.approx(2 / (12 / 60))


def test_score_of_a_perfect_reporter() -> None:
    truth = ["rock", "rock", "jazz", "jazz", "jazz", "jazz", "jazz", "pop", "pop", "pop", "pop", "pop"]
    got = score(truth, ENDS, SEGMENTS, settle=2.0)
    assert (got["accuracy"], got["steady_accuracy"], got["latency_s"], got["missed"]) == (1.0, 1.0, 0.0, 0.0)
    assert got["flips_per_min"] == got["true_switches_per_min"]


def test_radio_plan_is_seeded_never_repeats_a_style_back_to_back_and_adds_the_lead_in() -> None:
    styles, durations = radio_plan(3, 25, lead_in=8.0)
    assert (styles, durations) == radio_plan(3, 25, lead_in=8.0)
    assert styles != radio_plan(4, 25, lead_in=8.0)[0]
    assert set(styles) <= set(GENRES) and all(a != b for a, b in zip(styles, styles[1:]))
    assert 16.0 <= durations[0] <= 22.0 and all(8.0 <= d <= 14.0 for d in durations[1:])
