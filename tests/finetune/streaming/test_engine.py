"""StreamingEngine: every hop equals the offline model on its window (AST, PaSST, CNN14; chunk sizes that do not
divide the hop, several input rates, both start policies), outputs do not depend on batch neighbours, a faulty
session leaves the others untouched, and the settings are checked."""

from __future__ import annotations

import re

import pytest
import torch

from backbones import InputTooLongError
from finetune import build_model
from finetune.streaming import StreamError, StreamingEngine, WindowSpec
from tests.finetune.streaming.helpers import (
    MeanProbs,
    engine,
    offline,
    signal,
    stream,
    tiny_model,
    worst_deviation,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# (backbone, input rate, chunk samples, start policy): every chunk size and every rate at least once per backbone
CASES = [
    ("ast.tiny", 16000, 1, "wait"),
    ("ast.tiny", 22050, 317, "partial"),
    ("ast.tiny", 44100, 7777, "wait"),
    ("ast.tiny", 48000, 44100, "partial"),
    ("passt_s.tiny", 16000, 1, "partial"),
    ("passt_s.tiny", 22050, 44100, "wait"),
    ("passt_s.tiny", 44100, 317, "partial"),
    ("passt_s.tiny", 48000, 7777, "wait"),
    ("cnn14.tiny", 22050, 317, "partial"),
    ("cnn14.tiny", 48000, 7777, "wait"),
]


@pytest.mark.parametrize(("name", "rate", "chunk", "start"), CASES)
def test_every_hop_equals_offline(name: str, rate: int, chunk: int, start: str) -> None:
    window, hop = (1.0, 0.2) if chunk == 1 else (2.0, 0.5)  # one-sample chunks: a short stream
    eng = engine(name, window_s=window, hop_s=hop, start=start)
    x = signal(window + 3 * hop + 0.07, rate, seed=rate % 7)
    hops = stream(eng.open_session(sample_rate=rate), x, chunk)
    shortest = eng.geometry.min_samples / eng.sample_rate if start == "partial" else window
    expected_times = [
        round(k * hop, 6) for k in range(1, 20) if shortest <= k * hop <= window + 3 * hop + 1e-9
    ]
    assert [round(h.time, 6) for h in hops] == expected_times
    assert [h.index for h in hops] == list(range(len(hops)))
    assert [h.partial for h in hops] == [t < window for t in expected_times]
    assert worst_deviation(tiny_model(name), hops, x, rate) <= 1e-5


@pytest.mark.parametrize("name", ["ast.tiny", "passt_s.tiny", "cnn14.tiny"])
def test_ten_second_windows_equal_offline(name: str) -> None:
    """The released window length, where AST's last two, PaSST's first and CNN14's first and last two columns
    are recomputed per hop."""
    eng = engine(name, window_s=10.0, hop_s=0.5)
    x = signal(11.1, 44100, seed=3)
    hops = stream(eng.open_session(sample_rate=44100), x, 7777)
    assert [h.time for h in hops] == [10.0, 10.5, 11.0]
    assert worst_deviation(tiny_model(name), hops, x, 44100) <= 1e-5


def test_batch_invariance() -> None:
    """The same stream alone, and batched with 7 others of different lengths and start times (so that the
    batches it joins change from hop to hop), gives identical hops."""
    rate = 22050
    target = signal(3.3, rate, seed=11)
    alone = stream(
        engine("passt_s.tiny", window_s=2.0, hop_s=0.5, start="partial").open_session(rate), target, 5000
    )
    eng = engine("passt_s.tiny", window_s=2.0, hop_s=0.5, start="partial")
    batches = []
    predict = eng._predict
    eng._predict = lambda out: batches.append(out.pooled.shape[0]) or predict(out)
    others = [signal(1.0 + 0.4 * i, rate, seed=20 + i) for i in range(7)]
    sessions = [eng.open_session(rate) for _ in range(8)]
    signals, starts = [target, *others], [2, 0, 1, 3, 0, 5, 2, 4]  # the round in which each stream starts
    hops: list = []
    for r in range(20):
        chunks = {}
        for session, x, begin in zip(sessions, signals, starts):
            a = (r - begin) * 4410
            if 0 <= a < x.shape[-1]:
                chunks[session] = x[a : a + 4410]
        results = eng.push_many(chunks)
        hops += results.get(sessions[0], [])
    hops += sessions[0].flush().hops
    assert max(batches) > 1
    assert [h.time for h in hops] == [h.time for h in alone]
    for got, want in zip(hops, alone):
        assert float((got.outputs[2.0] - want.outputs[2.0]).abs().max()) <= 1e-6


def test_one_faulty_session_among_64() -> None:
    """Its bad chunks raise named errors for it alone and change nothing; its next good chunk gives the hops of a
    session that never saw them; the other 63 give their expected hops."""
    rate, chunk = 16000, 4000
    eng = engine("passt_s.tiny", window_s=1.0, hop_s=0.5)
    signals = [signal(1.6, rate, seed=s) for s in range(4)]
    expected = [
        stream(engine("passt_s.tiny", window_s=1.0, hop_s=0.5).open_session(rate), x, 997) for x in signals
    ]
    sessions = [eng.open_session(rate) for _ in range(64)]
    bad = sessions[13]
    faults = {
        2: (torch.full((chunk,), float("nan")), r"non-finite samples \(4000 NaN, 0 Inf\)"),
        3: ((signals[1][:chunk] * 32767).numpy().astype("int16"), r"chunk dtype int16 is not floating point"),
        4: (torch.zeros(2, chunk), r"expected mono \[N\] or \[1, N\], got shape \[2, 4000\]"),
    }
    got: dict = {s: [] for s in sessions}
    bad_offset = 0
    for r in range(10):
        chunks = {
            s: signals[i % 4][r * chunk : (r + 1) * chunk]
            for i, s in enumerate(sessions)
            if r * chunk < rate * 1.6
        }
        if r in faults:
            chunks[bad] = faults[r][0]
            before = (bad.time, bad.state_bytes(), bad._index)
        else:
            chunks[bad] = signals[1][bad_offset : bad_offset + chunk]
            bad_offset += chunk
        results = eng.push_many(chunks)
        for s, out in results.items():
            if s is bad and r in faults:
                assert isinstance(out, StreamError)
                assert str(out).startswith(f"session {bad.id!r}: ") and re.search(faults[r][1], str(out))
                assert (bad.time, bad.state_bytes(), bad._index) == before
            else:
                got[s] += out
    for i, s in enumerate(sessions):
        got[s] += s.flush().hops
        want = expected[i % 4]
        assert [h.time for h in got[s]] == [h.time for h in want] == [1.0, 1.5]
        for a, b in zip(got[s], want):
            torch.testing.assert_close(a.outputs[1.0], b.outputs[1.0], atol=1e-6, rtol=0)


def test_feed_then_step() -> None:
    eng = engine("ast.tiny", window_s=1.0, hop_s=0.5)
    rate = 16000
    a, b = eng.open_session(rate, session_id="a"), eng.open_session(rate, session_id="b")
    x = signal(1.2, rate, seed=2)
    a.feed(x)
    b.feed(x[:8000])
    stepped = eng.step()
    assert list(stepped) == [a] and [h.time for h in stepped[a]] == [1.0]
    assert eng.step() == {}
    assert [h.session for h in stepped[a]] == ["a"]
    results = eng.push_many({"b": x[8000:], "nobody": x})
    assert [h.time for h in results["b"]] == [1.0]
    assert isinstance(results["nobody"], StreamError) and "'nobody' is not a session of this engine" in str(
        results["nobody"]
    )
    torch.testing.assert_close(results["b"][0].outputs[1.0], stepped[a][0].outputs[1.0], atol=1e-6, rtol=0)
    assert set(eng.sessions) == {"a", "b"}
    with pytest.raises(StreamError, match="session id 'a' is already open"):
        eng.open_session(rate, session_id="a")


def test_several_windows_and_a_slow_one() -> None:
    """Right-aligned windows share the cached columns; a window with ``every=2`` is encoded every other hop."""
    eng = engine("ast.tiny", hop_s=0.5, windows=[WindowSpec(1.0), WindowSpec(2.0, every=2, weight=2.0)])
    x = signal(3.6, 22050, seed=5)
    hops = stream(eng.open_session(22050), x, 3001)
    assert [(h.time, sorted(h.outputs)) for h in hops] == [
        (2.0, [1.0, 2.0]),
        (2.5, [1.0]),
        (3.0, [1.0, 2.0]),
        (3.5, [1.0]),
    ]
    assert worst_deviation(tiny_model("ast.tiny"), hops, x, 22050) <= 1e-5


def test_odd_hops_are_rejected_or_recomputed() -> None:
    with pytest.raises(ValueError) as error:
        engine("ast.tiny", window_s=2.0, hop_s=0.505)
    assert str(error.value) == (
        "hop_s=0.505 s is not a multiple of ast.tiny's token-column stride (0.1 s = 1600 samples at 16000 Hz): "
        "the column cache is exact only on that grid. Use a multiple such as 0.5 s, or exact_recompute=True to "
        "recompute every window from the audio."
    )
    with pytest.raises(
        ValueError, match=r"window=2.05 s is not a multiple of cnn14.tiny's token-column stride \(0.02"
    ):
        engine("cnn14.tiny", window_s=2.05, hop_s=0.5)
    eng = engine("ast.tiny", window_s=2.0, hop_s=0.505, exact_recompute=True)
    x = signal(3.1, 16000, seed=6)
    hops = stream(eng.open_session(16000), x, 5000)
    assert [h.time for h in hops] == [2.02, 2.525, 3.03]
    assert worst_deviation(tiny_model("ast.tiny"), hops, x, 16000) <= 1e-5


def test_settings_are_checked() -> None:
    model = tiny_model("passt_s.tiny")
    with pytest.raises(InputTooLongError, match=r"covers at most 10.05 s of audio .* got a 12.0 s window"):
        StreamingEngine(model, window_s=12.0, postprocess=MeanProbs)
    with pytest.raises(ValueError, match=r"needs windows of at least 0.150 s \(4801 samples\), got 0.1 s"):
        StreamingEngine(model, window_s=0.1, hop_s=0.1, postprocess=MeanProbs)
    with pytest.raises(ValueError, match="start must be one of"):
        StreamingEngine(model, start="eager", postprocess=MeanProbs)
    with pytest.raises(ValueError, match="encoder_cache='activations' exists for Cnn14, not for PaSST"):
        StreamingEngine(model, encoder_cache="activations", postprocess=MeanProbs)
    with pytest.raises(
        ValueError, match=r"encoder_cache must be 'none' or one of \['activations'\], got 'layers'"
    ):
        StreamingEngine(model, encoder_cache="layers", postprocess=MeanProbs)
    with pytest.raises(
        ValueError, match="hop_s=0.3333333333333333 s is not a whole number of samples at 32000 Hz"
    ):
        StreamingEngine(model, hop_s=1 / 3, postprocess=MeanProbs)
    with pytest.raises(ValueError, match="windows must have distinct lengths"):
        StreamingEngine(model, windows=[1.0, WindowSpec(1.0, every=2)], postprocess=MeanProbs)
    with pytest.raises(ValueError, match="dtype must be None"):
        StreamingEngine(model, dtype=torch.float64, postprocess=MeanProbs)
    with pytest.raises(TypeError, match="takes an AudioModel, got PaSST"):
        StreamingEngine(model.backbone, postprocess=MeanProbs)
    pcen = build_model("cnn14.tiny", head="linear", num_outputs=2, backbone_overrides={"compression": "pcen"})
    with pytest.raises(ValueError, match=r"\(PCEN or per-clip CMVN\) .* use exact_recompute=True"):
        StreamingEngine(pcen, window_s=2.0, postprocess=MeanProbs)
    assert StreamingEngine(pcen, window_s=2.0, exact_recompute=True, postprocess=MeanProbs).exact_recompute


def test_a_model_switched_to_training_is_refused() -> None:
    model = build_model("passt_s.tiny", head="linear", num_outputs=2)
    session = StreamingEngine(model, window_s=1.0, postprocess=MeanProbs).open_session(32000)
    model.train()
    with pytest.raises(
        RuntimeError, match=r"put in training mode after the engine was built .* call model.eval\(\)"
    ):
        session.push(torch.zeros(40000))


def test_bf16_autocast_follows_the_offline_model_under_autocast() -> None:
    eng = engine("ast.tiny", window_s=1.0, hop_s=0.5, dtype=torch.bfloat16)
    x = signal(2.1, 16000, seed=8)
    hops = stream(eng.open_session(16000), x, 3000)
    model = tiny_model("ast.tiny")
    for hop in hops:
        ref = offline(model, x, 16000, hop.time, 1.0, dtype=torch.bfloat16)
        assert hop.outputs[1.0].dtype == torch.float32
        torch.testing.assert_close(hop.outputs[1.0], ref, atol=2e-2, rtol=0)
