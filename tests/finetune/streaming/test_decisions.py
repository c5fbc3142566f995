"""Decision layer: switch timing on scripted value sequences (hysteresis counts, margins, instant switches,
minimum duration), segment events, flush, reset and errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from backbones.config import ConfigError
from finetune.streaming.decisions import DecisionConfig, DecisionError, DecisionLayer
from finetune.streaming.types import SegmentEvent

LABELS = ("rock", "jazz", "pop")
ROCK, JAZZ, POP = [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.1, 0.3, 0.6]


def _run(
    layer: DecisionLayer, rows: Sequence[Sequence[float]], hop: float = 0.5, start: float = 0.0
) -> tuple[list[str | None], list[SegmentEvent]]:
    """Step through ``rows`` at times start, start + hop, ...; the labels per hop and all events."""
    labels, events = [], []
    for i, row in enumerate(rows):
        label, new = layer.step(torch.tensor(row), start + i * hop)
        labels.append(label)
        events.extend(new)
    return labels, events


def test_defaults_report_the_top_class_at_once_and_emit_end_and_start_at_each_switch() -> None:
    layer = DecisionLayer(DecisionConfig(), LABELS)
    labels, events = _run(layer, [ROCK, ROCK, JAZZ, JAZZ, ROCK])
    assert labels == ["rock", "rock", "jazz", "jazz", "rock"]
    assert events == [
        SegmentEvent("start", "rock", 0.0),
        SegmentEvent("end", "rock", 1.0),
        SegmentEvent("start", "jazz", 1.0),
        SegmentEvent("end", "jazz", 2.0),
        SegmentEvent("start", "rock", 2.0),
    ]


def test_min_hops_switches_on_the_mth_consecutive_leading_hop_and_an_interruption_restarts_the_count() -> (
    None
):
    layer = DecisionLayer(DecisionConfig(min_hops=3), LABELS)
    # hops 0-2 decide rock; jazz leads at 3, 4, is interrupted at 5, leads again at 6, 7, 8 -> switch at 8
    rows = [ROCK] * 3 + [JAZZ, JAZZ, ROCK, JAZZ, JAZZ, JAZZ, JAZZ]
    labels, events = _run(layer, rows)
    assert labels == [None, None, "rock", "rock", "rock", "rock", "rock", "rock", "jazz", "jazz"]
    assert events == [
        SegmentEvent("start", "rock", 1.0),
        SegmentEvent("end", "rock", 4.0),
        SegmentEvent("start", "jazz", 4.0),
    ]


def test_a_different_leader_restarts_the_count() -> None:
    layer = DecisionLayer(DecisionConfig(min_hops=2), LABELS)
    labels, _ = _run(layer, [ROCK, ROCK, JAZZ, POP, JAZZ, JAZZ])
    assert labels == [None, "rock", "rock", "rock", "rock", "jazz"]


def test_margin_counts_only_hops_that_lead_by_at_least_the_margin() -> None:
    layer = DecisionLayer(DecisionConfig(min_hops=2, margin=0.2), LABELS)
    close = [0.45, 0.5, 0.05]  # jazz leads rock by 0.05 < 0.2: not counted, and the count restarts
    clear = [0.3, 0.6, 0.1]  # by 0.3
    labels, events = _run(layer, [ROCK, ROCK, clear, close, clear, clear])
    assert labels == [None, "rock", "rock", "rock", "rock", "jazz"]
    assert events[-1] == SegmentEvent("start", "jazz", 2.5)


def test_before_any_label_the_lead_is_over_the_runner_up_and_a_tie_at_the_top_decides_nothing() -> None:
    layer = DecisionLayer(DecisionConfig(margin=0.25), LABELS)
    labels, _ = _run(layer, [[0.4, 0.4, 0.2], [0.45, 0.35, 0.2], [0.6, 0.3, 0.1]])
    assert labels == [None, None, "rock"]  # leads 0, then 0.1 < 0.25, then 0.3


def test_switch_margin_switches_at_once_on_a_large_lead_whatever_min_hops_says() -> None:
    layer = DecisionLayer(DecisionConfig(min_hops=4, switch_margin=0.5), LABELS)
    labels, events = _run(layer, [[0.9, 0.05, 0.05], JAZZ, [0.1, 0.8, 0.1]])
    assert labels == ["rock", "rock", "jazz"]  # a 0.85 lead decides at once; 0.3 waits; 0.7 switches
    assert events[-1] == SegmentEvent("start", "jazz", 1.0)


def test_min_duration_defers_a_qualifying_switch_to_the_first_hop_after_it() -> None:
    layer = DecisionLayer(DecisionConfig(min_hops=1, min_duration=2.0), LABELS)
    labels, events = _run(layer, [ROCK, JAZZ, JAZZ, JAZZ, JAZZ, JAZZ, POP, ROCK])
    # rock is reported at 0.0; jazz leads from 0.5 on but may take over only at 2.0; jazz then holds until
    # 4.0 although pop (3.0) and rock (3.5) lead earlier
    assert labels == ["rock", "rock", "rock", "rock", "jazz", "jazz", "jazz", "jazz"]
    assert events == [
        SegmentEvent("start", "rock", 0.0),
        SegmentEvent("end", "rock", 2.0),
        SegmentEvent("start", "jazz", 2.0),
    ]
    _, later = _run(layer, [ROCK], start=4.0)
    assert later == [SegmentEvent("end", "jazz", 4.0), SegmentEvent("start", "rock", 4.0)]


def test_min_duration_counts_rounded_hop_times_in_full() -> None:
    layer = DecisionLayer(DecisionConfig(min_duration=0.3), LABELS)
    times = [0.4, 0.5, 0.6, 0.7]  # 0.7 - 0.4 = 0.29999999999999993 in floating point
    labels = [layer.step(torch.tensor(row), t)[0] for row, t in zip([ROCK, JAZZ, JAZZ, JAZZ], times)]
    assert labels == ["rock", "rock", "rock", "jazz"]


def test_ties_go_to_the_lower_class_index_and_an_equal_value_does_not_unseat_the_label() -> None:
    layer = DecisionLayer(DecisionConfig(), LABELS)
    labels, _ = _run(layer, [[0.2, 0.4, 0.4], [0.2, 0.4, 0.4], [0.1, 0.45, 0.45]])
    assert labels == [None, None, None]  # a tie at the top: no leader
    layer.reset()
    labels, _ = _run(layer, [POP, [0.1, 0.45, 0.45], [0.1, 0.46, 0.44]])
    assert labels == ["pop", "pop", "jazz"]


def test_flush_ends_the_open_segment_once_and_a_later_hop_starts_a_new_one() -> None:
    layer = DecisionLayer(DecisionConfig(), LABELS)
    assert layer.flush() == ()
    _run(layer, [ROCK, ROCK, ROCK])
    assert layer.flush() == (SegmentEvent("end", "rock", 1.0),)
    assert layer.label is None and layer.flush() == ()
    _, events = _run(layer, [ROCK], start=1.5)
    assert events == [SegmentEvent("start", "rock", 1.5)]


def test_reset_forgets_label_candidate_and_time_without_events() -> None:
    layer = DecisionLayer(DecisionConfig(min_hops=2), LABELS)
    _run(layer, [ROCK, ROCK, JAZZ], start=10.0)
    layer.reset()
    assert layer.label is None and layer.flush() == ()
    labels, events = _run(layer, [JAZZ, JAZZ])  # time starts again at 0; jazz needs its own two hops
    assert labels == [None, "jazz"] and events == [SegmentEvent("start", "jazz", 0.5)]


def test_bad_values_and_backward_time_raise_and_leave_the_state_as_it_was() -> None:
    layer = DecisionLayer(DecisionConfig(min_hops=2), LABELS)
    _run(layer, [ROCK, ROCK, JAZZ])  # jazz has led once, at 1.0
    with pytest.raises(DecisionError, match=r"expected 3 class values \(one per label\), got shape \(2,\)"):
        layer.step(torch.tensor([0.5, 0.5]), 1.5)
    with pytest.raises(DecisionError, match="class values at time 1.500 s contain NaN or Inf"):
        layer.step(torch.tensor([0.5, float("nan"), 0.1]), 1.5)
    with pytest.raises(DecisionError, match=r"hop time 0.5 s is before the previous hop's \(1.0 s\); reset"):
        layer.step(torch.tensor(JAZZ), 0.5)
    assert layer.step(torch.tensor(JAZZ), 1.5) == (
        "jazz",
        (SegmentEvent("end", "rock", 1.5), SegmentEvent("start", "jazz", 1.5)),
    )


def test_config_errors_name_the_key_and_the_fix() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown key\(s\) decisions.min_hop \(did you mean 'min_hops'\?\)"
    ):
        DecisionConfig.from_dict({"min_hop": 3}, "decisions")
    with pytest.raises(ConfigError, match=r"decisions: min_hops must be >= 1 \(1: switch at the first"):
        DecisionConfig.from_dict({"min_hops": 0}, "decisions")
    with pytest.raises(ConfigError, match="decisions: margin must be a finite number >= 0, got -0.1"):
        DecisionConfig.from_dict({"margin": -0.1}, "decisions")
    with pytest.raises(ConfigError, match=r"switch_margin \(0.1\) is below margin \(0.2\)"):
        DecisionConfig.from_dict({"margin": 0.2, "switch_margin": 0.1}, "decisions")
    with pytest.raises(ConfigError, match="min_duration must be a finite number of seconds >= 0, got -1.0"):
        DecisionConfig.from_dict({"min_duration": -1}, "decisions")
    with pytest.raises(DecisionError, match="labels is empty; give one name per class"):
        DecisionLayer(DecisionConfig(), [])
