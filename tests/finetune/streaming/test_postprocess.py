"""Post-processing chain: each stage's arithmetic (calibration before fusion, fusion weights, a slow window
reused between its updates, last-N mean, EMA, top-1 trend EMA), top-k, the decision layer inside the chain,
ratings, reset, and errors with their messages."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.config import ConfigError
from finetune.calibration import Calibration, CalibrationError
from finetune.streaming.decisions import DecisionError
from finetune.streaming.postprocess import (
    PostProcessConfig,
    PostProcessError,
    StreamPostProcessor,
    build_postprocessor,
)
from finetune.streaming.types import RawHop, SegmentEvent, WindowSpec

LABELS = ("rock", "jazz", "pop")
FAST, SLOW = WindowSpec(2.0), WindowSpec(6.0, every=3, weight=3.0)


def _logits(*probs: float) -> torch.Tensor:
    """Logits whose softmax is ``probs``."""
    return torch.tensor(probs, dtype=torch.float32).log()


def _hop(index: int, outputs: dict[float, torch.Tensor], hop_s: float = 0.5, partial: bool = False) -> RawHop:
    return RawHop(index=index, time=2.0 + index * hop_s, outputs=outputs, partial=partial)


def _chain(config: dict | None = None, windows=(FAST,), task="single_label", labels=LABELS, calibration=None):
    return build_postprocessor(config, task, labels, windows, calibration, session="radio-1")


def _close(a: torch.Tensor, b: torch.Tensor | list[float]) -> None:
    torch.testing.assert_close(a, torch.as_tensor(b, dtype=torch.float32), rtol=0, atol=1e-6)


def test_without_options_a_hop_reports_softmax_probabilities_and_named_top_k() -> None:
    z = torch.tensor([0.5, 2.0, -1.0])
    hop = _chain({"top_k": 2}).step(_hop(4, {2.0: z}, partial=True))
    _close(hop.probs, z.softmax(-1))
    assert torch.equal(hop.smoothed, hop.probs)
    assert hop.top_k == (
        ("jazz", pytest.approx(float(z.softmax(-1)[1]))),
        ("rock", pytest.approx(float(z.softmax(-1)[0]))),
    )
    assert (hop.session, hop.index, hop.time, hop.partial, hop.label, hop.events) == (
        "radio-1",
        4,
        4.0,
        True,
        None,
        (),
    )
    assert hop.outputs[2.0] is z


def test_top_k_breaks_ties_by_class_order() -> None:
    hop = _chain().step(_hop(0, {2.0: torch.zeros(3)}))
    assert [name for name, _ in hop.top_k] == ["rock", "jazz", "pop"]


def test_the_model_calibration_is_applied_and_config_terms_go_on_top() -> None:
    z = torch.tensor([1.0, 2.0, 0.5])
    cal = Calibration("single_label", 3, temperature=2.0, bias=(0.1, 0.0, -0.2), labels=LABELS)
    _close(
        _chain(calibration=cal).step(_hop(0, {2.0: z})).probs,
        (z / 2 + torch.tensor([0.1, 0.0, -0.2])).softmax(-1),
    )
    _close(
        _chain({"use_model_calibration": False}, calibration=cal).step(_hop(0, {2.0: z})).probs, z.softmax(-1)
    )
    config = {
        "temperature": 4.0,
        "logit_bias": [0.0, 1.0, 0.0],
        "train_prior": [1, 1, 2],
        "target_prior": [2, 1, 1],
    }
    expected = z / 4 + torch.tensor([0.1, 1.0, -0.2]) + torch.tensor([math.log(2.0), 0.0, math.log(0.5)])
    _close(_chain(config, calibration=cal).step(_hop(0, {2.0: z})).probs, expected.softmax(-1))


def test_an_identity_calibration_is_dropped() -> None:
    chain = _chain(calibration=Calibration("single_label", 3))
    assert isinstance(chain, StreamPostProcessor) and chain.calibration is None


def test_probability_fusion_calibrates_each_window_then_averages_with_the_weights() -> None:
    cal = Calibration("single_label", 3, temperature=0.5)
    z_fast, z_slow = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    hop = _chain(windows=(FAST, SLOW), calibration=cal).step(_hop(0, {2.0: z_fast, 6.0: z_slow}))
    expected = 0.25 * (z_fast / 0.5).softmax(-1) + 0.75 * (z_slow / 0.5).softmax(-1)
    _close(hop.probs, expected)
    assert float((hop.probs - 0.25 * z_fast.softmax(-1) - 0.75 * z_slow.softmax(-1)).abs().max()) > 0.05


def test_logit_fusion_averages_calibrated_logits_then_takes_the_softmax() -> None:
    cal = Calibration("single_label", 3, bias=(0.0, 0.5, 0.0))
    z_fast, z_slow = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    hop = _chain({"fusion": "logits"}, windows=(FAST, SLOW), calibration=cal).step(
        _hop(0, {2.0: z_fast, 6.0: z_slow})
    )
    _close(hop.probs, (0.25 * z_fast + 0.75 * z_slow + torch.tensor([0.0, 0.5, 0.0])).softmax(-1))


def test_a_slow_window_is_reused_between_its_updates_and_missing_ones_are_left_out() -> None:
    chain = _chain({"fusion": "logits"}, windows=(FAST, SLOW))
    f = [torch.tensor([float(i), 0.0, 0.0]) for i in range(4)]
    s0, s3 = torch.tensor([0.0, 4.0, 0.0]), torch.tensor([0.0, 0.0, 8.0])
    first = chain.step(_hop(0, {2.0: f[0]}))  # the slow window has not come yet: the fast one alone
    _close(first.probs, f[0].softmax(-1))
    hops = [
        chain.step(_hop(1, {2.0: f[1], 6.0: s0})),
        chain.step(_hop(2, {2.0: f[2]})),
        chain.step(_hop(3, {2.0: f[3], 6.0: s3})),
    ]
    for hop, fast, slow in zip(hops, f[1:], [s0, s0, s3]):
        _close(hop.probs, (0.25 * fast + 0.75 * slow).softmax(-1))
    _close(chain.step(_hop(4, {})).probs, (0.25 * f[3] + 0.75 * s3).softmax(-1))  # nothing new: both reused


def test_ema_follows_its_recurrence_from_the_first_vector() -> None:
    chain = _chain({"ema": 0.25})
    rows = [(0.5, 0.3, 0.2), (0.2, 0.6, 0.2), (0.1, 0.1, 0.8)]
    smoothed = [chain.step(_hop(i, {2.0: _logits(*p)})).smoothed for i, p in enumerate(rows)]
    _close(smoothed[0], [0.5, 0.3, 0.2])
    _close(smoothed[1], [0.425, 0.375, 0.2])
    _close(smoothed[2], [0.34375, 0.30625, 0.35])
    hop = chain.step(_hop(3, {2.0: _logits(0.1, 0.1, 0.8)}))
    _close(hop.probs, [0.1, 0.1, 0.8])  # probs stay unsmoothed
    assert hop.top_k[0] == ("pop", pytest.approx(0.25 * 0.8 + 0.75 * 0.35, abs=1e-6))


def test_mean_last_averages_the_last_n_vectors_and_feeds_the_ema() -> None:
    rows = [(0.5, 0.3, 0.2), (0.2, 0.6, 0.2), (0.1, 0.1, 0.8), (0.7, 0.2, 0.1)]
    chain = _chain({"mean_last": 2})
    means = [chain.step(_hop(i, {2.0: _logits(*p)})).smoothed for i, p in enumerate(rows)]
    for got, expected in zip(
        means, [[0.5, 0.3, 0.2], [0.35, 0.45, 0.2], [0.15, 0.35, 0.5], [0.4, 0.15, 0.45]]
    ):
        _close(got, expected)
    chain = _chain({"mean_last": 2, "ema": 0.5})
    both = [chain.step(_hop(i, {2.0: _logits(*p)})).smoothed for i, p in enumerate(rows[:3])]
    _close(
        both[2],
        0.5 * torch.tensor([0.15, 0.35, 0.5])
        + 0.25 * torch.tensor([0.35, 0.45, 0.2])
        + 0.25 * torch.tensor([0.5, 0.3, 0.2]),
    )


def test_trend_ema_smooths_the_one_hot_top1_series() -> None:
    chain = _chain({"trend_ema": 0.5, "top_k": 1})
    rows = [(0.5, 0.3, 0.2), (0.2, 0.6, 0.2), (0.1, 0.7, 0.2), (0.1, 0.2, 0.7)]
    hops = [chain.step(_hop(i, {2.0: _logits(*p)})) for i, p in enumerate(rows)]
    for hop, expected in zip(hops, [[1, 0, 0], [0.5, 0.5, 0], [0.25, 0.75, 0], [0.125, 0.375, 0.5]]):
        _close(hop.smoothed, expected)
    assert [h.top_k for h in hops] == [(("rock", 1.0),), (("rock", 0.5),), (("jazz", 0.75),), (("pop", 0.5),)]


def test_multi_label_fusion_averages_sigmoids() -> None:
    z_fast, z_slow = torch.tensor([1.0, -1.0, 0.0]), torch.tensor([3.0, 0.0, -2.0])
    hop = _chain(windows=(FAST, SLOW), task="multi_label").step(_hop(0, {2.0: z_fast, 6.0: z_slow}))
    _close(hop.probs, 0.25 * z_fast.sigmoid() + 0.75 * z_slow.sigmoid())


def test_the_decision_layer_reports_labels_and_events_and_flush_closes_the_segment() -> None:
    chain = _chain({"ema": 0.5, "decisions": {"min_hops": 2}})
    rows = [(0.6, 0.3, 0.1)] * 2 + [(0.1, 0.8, 0.1)] * 3
    hops = [chain.step(_hop(i, {2.0: _logits(*p)})) for i, p in enumerate(rows)]
    # smoothed jazz leads from hop 2 on (0.55 vs 0.35) and has led for two hops at hop 3 (0.675 vs 0.225)
    assert [h.label for h in hops] == [None, "rock", "rock", "jazz", "jazz"]
    assert [e for h in hops for e in h.events] == [
        SegmentEvent("start", "rock", 2.5),
        SegmentEvent("end", "rock", 3.5),
        SegmentEvent("start", "jazz", 3.5),
    ]
    assert chain.flush() == (SegmentEvent("end", "jazz", 4.0),)
    assert _chain().flush() == ()


def test_ratings_are_fused_and_smoothed_as_they_are_and_top_k_lists_every_dimension_in_order() -> None:
    names = ("dynamics", "tempo")
    chain = _chain({"ema": 0.5, "top_k": 1}, windows=(FAST, SLOW), task="rating", labels=names)
    first = chain.step(_hop(0, {2.0: torch.tensor([1.0, 2.0]), 6.0: torch.tensor([5.0, -2.0])}))
    _close(first.probs, [4.0, -1.0])
    second = chain.step(_hop(1, {2.0: torch.tensor([5.0, 2.0])}))
    _close(second.probs, [5.0, -1.0])
    _close(second.smoothed, [4.5, -1.0])
    assert second.top_k == (("dynamics", 4.5), ("tempo", -1.0)) and second.label is None


def test_ratings_refuse_classification_options_by_name() -> None:
    for key, value in [("decisions", {}), ("trend_ema", 0.3), ("temperature", 2.0)]:
        with pytest.raises(
            ConfigError, match=rf"postprocess.{key}: applies to classification; a rating head"
        ):
            _chain({key: value}, task="rating", labels=("a", "b"))


def test_reset_forgets_windows_smoothing_and_decisions() -> None:
    chain = _chain({"ema": 0.5, "decisions": {}}, windows=(FAST, SLOW))
    chain.step(_hop(0, {2.0: _logits(0.6, 0.3, 0.1), 6.0: _logits(0.6, 0.3, 0.1)}))
    chain.reset()
    with pytest.raises(PostProcessError, match="hop 0 carries no window output and none came before"):
        chain.step(_hop(0, {}))
    hop = chain.step(
        RawHop(0, 0.5, {2.0: _logits(0.1, 0.8, 0.1)}, False)
    )  # earlier time: allowed after reset
    _close(hop.smoothed, [0.1, 0.8, 0.1])
    assert hop.events == (SegmentEvent("start", "jazz", 0.5),)


def test_bad_hops_raise_named_errors_and_leave_the_session_as_it_was() -> None:
    config = {"ema": 0.5, "decisions": {"min_hops": 2}}
    good = [_logits(0.6, 0.3, 0.1), _logits(0.2, 0.7, 0.1), _logits(0.2, 0.7, 0.1)]
    clean = _chain(config, windows=(FAST, SLOW))
    expected = [clean.step(_hop(i, {2.0: z})) for i, z in enumerate(good)]
    chain = _chain(config, windows=(FAST, SLOW))
    chain.step(_hop(0, {2.0: good[0]}))
    chain.step(_hop(1, {2.0: good[1]}))
    with pytest.raises(
        PostProcessError, match=r"hop 2: output for a 4.0 s window, but this session's windows are 2, 6 s"
    ):
        chain.step(_hop(2, {4.0: good[2]}))
    with pytest.raises(
        PostProcessError,
        match=r"hop 2, window 2 s: expected an output of shape \[3\] \(one value per label\), got \[1, 3\]",
    ):
        chain.step(_hop(2, {2.0: good[2][None]}))
    with pytest.raises(PostProcessError, match="hop 2, window 6 s: the output has NaN or Inf"):
        chain.step(_hop(2, {2.0: good[2], 6.0: torch.tensor([0.0, math.inf, 0.0])}))
    with pytest.raises(DecisionError, match=r"hop time 1.0 s is before the previous hop's \(2.5 s\)"):
        chain.step(RawHop(2, 1.0, {2.0: good[2], 6.0: good[2]}, False))
    got = chain.step(_hop(2, {2.0: good[2]}))
    _close(got.smoothed, expected[2].smoothed)
    assert (
        (got.label, got.events)
        == (expected[2].label, expected[2].events)
        == ("jazz", (SegmentEvent("start", "jazz", 3.0),))
    )


def test_session_comes_from_the_factory_or_from_step() -> None:
    chain = _chain()
    assert chain.step(_hop(0, {2.0: torch.zeros(3)})).session == "radio-1"
    assert chain.step(_hop(1, {2.0: torch.zeros(3)}), session="radio-2").session == "radio-2"
    assert chain.step(_hop(2, {2.0: torch.zeros(3)})).session == "radio-2"


def test_config_errors_name_the_key_and_suggest_close_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) postprocess.emma \(did you mean 'ema'\?\)"):
        _chain({"emma": 0.3})
    with pytest.raises(ConfigError, match=r"postprocess.decisions.min_hops: expected int, got 'two'"):
        _chain({"decisions": {"min_hops": "two"}})
    with pytest.raises(
        ConfigError,
        match=r"postprocess.fusion: expected one of 'probs', 'logits', got 'logit' "
        r"\(did you mean 'logits'\?\)",
    ):
        _chain({"fusion": "logit"})
    with pytest.raises(
        ConfigError,
        match=r"postprocess: ema is the weight of the newest hop and must lie in \(0, 1\], got 1.5",
    ):
        _chain({"ema": 1.5})
    with pytest.raises(ConfigError, match="postprocess: mean_last must be >= 1 hops"):
        _chain({"mean_last": 0})
    with pytest.raises(ConfigError, match="needs both train_prior and target_prior"):
        _chain({"train_prior": [1, 1, 1]})
    with pytest.raises(ConfigError, match="postprocess.logit_bias: has 2 entries for 3 classes"):
        _chain({"logit_bias": [0.0, 1.0]})
    with pytest.raises(
        ConfigError, match="postprocess.train_prior: a class-prior correction applies to single-label"
    ):
        _chain({"train_prior": [1, 1, 1], "target_prior": [1, 2, 1]}, task="multi_label")
    with pytest.raises(ValueError, match="temperature must be a positive finite number, got 0.0"):
        PostProcessConfig(temperature=0.0)


def test_factory_errors_for_calibrations_windows_and_labels() -> None:
    with pytest.raises(
        CalibrationError,
        match=r"fitted for classes \['a', 'b', 'c'\], the stream's are \['rock', 'jazz', 'pop'\]",
    ):
        _chain(calibration=Calibration("single_label", 3, labels=("a", "b", "c")))
    with pytest.raises(
        CalibrationError, match="a multi_label calibration for 3 classes does not fit this single_label head"
    ):
        _chain(calibration=Calibration("multi_label", 3, temperature=2.0))
    with pytest.raises(PostProcessError, match="no windows: give at least one WindowSpec"):
        _chain(windows=())
    with pytest.raises(PostProcessError, match="two windows of 2 s; give each window length once"):
        _chain(windows=(FAST, WindowSpec(2.0, weight=2.0)))
    with pytest.raises(PostProcessError, match=r"window 6 s: weight must be a positive number, got 0.0"):
        _chain(windows=(FAST, WindowSpec(6.0, weight=0.0)))
    with pytest.raises(PostProcessError, match=r"window 6 s: every must be an integer >= 1, got 0"):
        _chain(windows=(FAST, WindowSpec(6.0, every=0)))
    with pytest.raises(
        PostProcessError, match=r"labels must be distinct names, one per output, got \['a', 'a'\]"
    ):
        _chain(labels=("a", "a"))
