"""StreamingSession: input checks that change nothing, channel downmix as load_audio does, numpy input, the clock
with gaps and timestamps, flush / reset / close, and state bounded by the window over a 2-minute stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finetune.data import load_audio
from finetune.data.resample import resample
from finetune.streaming import StreamError
from tests.finetune.streaming.helpers import engine, offline, signal, stream, tiny_model, worst_deviation

pytestmark = pytest.mark.usefixtures("one_thread")


def _outputs(hops: list) -> list[tuple[float, torch.Tensor]]:
    return [(h.time, h.outputs[next(iter(h.outputs))]) for h in hops]


def _assert_same(a: list, b: list, atol: float = 0.0) -> None:
    assert [t for t, _ in _outputs(a)] == [t for t, _ in _outputs(b)]
    for (_, x), (_, y) in zip(_outputs(a), _outputs(b)):
        torch.testing.assert_close(x, y, atol=atol, rtol=0)


def test_bad_input_raises_and_changes_nothing() -> None:
    eng = engine("passt_s.tiny", window_s=1.0, hop_s=0.5)
    mono, stereo = (
        eng.open_session(16000, session_id="m"),
        eng.open_session(16000, channels=2, session_id="s"),
    )
    x = signal(1.6, 16000, seed=1)
    mono.push(x[:5000])
    before = (mono.time, mono.state_bytes(), mono._index)
    bad = [
        (
            torch.tensor([0.1, float("inf"), float("nan")]),
            r"the chunk holds non-finite samples \(1 NaN, 1 Inf\); it was dropped",
        ),
        (
            np.zeros(10, dtype=np.int16),
            r"chunk dtype int16 is not floating point; pass float samples in \[-1, 1\]",
        ),
        (torch.zeros(10, dtype=torch.int32), r"chunk dtype torch.int32 is not floating point"),
        (
            torch.zeros(2, 10),
            r"expected mono \[N\] or \[1, N\], got shape \[2, 10\]; open the session with channels",
        ),
        (torch.zeros(1, 2, 10), r"expected mono \[N\] or \[1, N\], got shape \[1, 2, 10\]"),
        ([0.0, 0.1], r"expected a numpy array or torch tensor of samples, got list"),
    ]
    for chunk, message in bad:
        with pytest.raises(StreamError, match=r"^session 'm': " + message):
            mono.push(chunk)
        assert (mono.time, mono.state_bytes(), mono._index) == before
    with pytest.raises(
        StreamError, match=r"expected \[2, N\] \(channels first\), got shape \[10, 2\]; a \[N, 2\] chunk"
    ):
        stereo.push(torch.zeros(10, 2))
    with pytest.raises(StreamError, match=r"gap must be >= 0 s, got -1"):
        mono.push_gap(-1)
    assert (mono.time, mono.state_bytes(), mono._index) == before
    clean = eng.open_session(16000)
    _assert_same(mono.push(x[5000:]) + mono.flush().hops, stream(clean, x, 5000))
    with pytest.raises(StreamError, match="sample_rate 100 Hz is outside"):
        eng.open_session(100)
    with pytest.raises(StreamError, match="channels must be a positive int or None"):
        eng.open_session(16000, channels=0)


def test_channels_are_averaged_as_load_audio_does(tmp_path: Path) -> None:
    rate = 22050
    left, right = signal(2.3, rate, seed=2), 0.5 * signal(2.3, rate, seed=3)
    path = tmp_path / "stereo.wav"
    sf.write(path, torch.stack([left, right]).T.numpy(), rate, subtype="FLOAT")
    both, _ = load_audio(path, mono=False)
    mono, _ = load_audio(path)
    eng = engine("ast.tiny", window_s=1.0, hop_s=0.5)
    from_stereo = stream(eng.open_session(rate, channels=2), both, 3001)
    from_mono = stream(eng.open_session(rate), mono[0], 3001)
    assert len(from_stereo) == 3
    _assert_same(from_stereo, from_mono)
    from_numpy = stream(eng.open_session(rate, channels=2), both.numpy().astype(np.float64), 3001)
    _assert_same(from_numpy, from_stereo)


def test_gaps_restart_the_cache_and_keep_the_clock() -> None:
    """After a gap the hop grid restarts at the new segment (waiting for a full window again); each segment's hops
    equal the offline model on that segment's audio alone; the index keeps counting."""
    rate = 22050
    eng = engine("passt_s.tiny", window_s=1.0, hop_s=0.5)
    first, second = signal(1.6, rate, seed=4), signal(1.7, rate, seed=5)
    session = eng.open_session(rate)
    hops = stream(session, first, 4000, flush=False)
    hops += session.push_gap(0.75)
    assert session.time == pytest.approx(2.35)
    after = stream(session, second, 4000)
    assert [(h.index, round(h.time, 6)) for h in hops + after] == [(0, 1.0), (1, 1.5), (2, 3.35), (3, 3.85)]
    model = tiny_model("passt_s.tiny")
    assert worst_deviation(model, hops, first, rate) <= 1e-5
    for hop in after:
        ref = offline(model, second, rate, hop.time - 2.35, 1.0)
        torch.testing.assert_close(hop.outputs[1.0], ref, atol=1e-5, rtol=0)
    # the same through timestamps: the first sets the origin, a jump is a gap, a small jitter is not
    timed = eng.open_session(rate)
    got = timed.push(first[:20000], timestamp=100.0) + timed.push(
        first[20000:], timestamp=100.0 + 20000 / rate + 0.004
    )
    got += timed.push(second, timestamp=102.35) + timed.flush().hops
    assert [round(h.time, 6) for h in got] == [101.0, 101.5, 103.35, 103.85]
    for a, b in zip(got, hops + after):
        torch.testing.assert_close(a.outputs[1.0], b.outputs[1.0], atol=1e-6, rtol=0)
    late = eng.open_session(rate)
    late.push(first[:8000], timestamp=5.0)
    state = (late.time, late.state_bytes())
    with pytest.raises(
        StreamError, match=r"timestamp 5.100000 s is 0.262\d+ s before the end of the audio received"
    ):
        late.push(first[8000:], timestamp=5.1)
    assert (late.time, late.state_bytes()) == state


def test_flush_emits_the_hops_of_the_resampler_tail_then_restarts() -> None:
    rate = 44100
    eng = engine("cnn14.tiny", window_s=1.0, hop_s=0.5)
    session = eng.open_session(rate)
    x = signal(1.5, rate, seed=6)  # the 1.5 s hop needs the resampler's look-ahead: only flush completes it
    assert [h.time for h in session.push(x)] == [1.0]
    end = session.flush()
    assert [h.time for h in end.hops] == [1.5] and end.events == ()
    assert worst_deviation(tiny_model("cnn14.tiny"), end.hops, x, rate) <= 1e-5
    assert (session.time, session._index) == (0.0, 0)
    again = session.push(x)
    _assert_same(again, stream(eng.open_session(rate), x[: round(1.2 * rate)], 5000, flush=False))


def test_reset_and_close() -> None:
    eng = engine("ast.tiny", window_s=1.0, hop_s=0.5)
    session = eng.open_session(16000, session_id="radio")
    x = signal(1.6, 16000, seed=7)
    first = stream(session, x[:12000], 3000, flush=False)
    session.reset()
    assert session.time == 0.0 and session._post.steps == 0
    _assert_same(stream(session, x, 3000, flush=False), stream(eng.open_session(16000), x, 3000, flush=False))
    assert first == []
    session.close()
    assert session.closed and "radio" not in eng.sessions and session.state_bytes() == 0
    with pytest.raises(StreamError, match=r"session 'radio' is closed; open a new one"):
        session.push(x)
    assert isinstance(eng.push_many({session: x})[session], StreamError)


def test_state_is_bounded_over_two_minutes() -> None:
    """The CI part of the soak: state bytes flat after the first window, sampled hops still exact."""
    rate, chunk = 44100, 11025
    eng = engine("passt_s.tiny", window_s=2.0, hop_s=0.5)
    session = eng.open_session(rate)
    x = signal(6.0, rate, seed=9).repeat(20)  # 2 minutes
    sizes, hops = [], []
    for i in range(0, x.shape[-1], chunk):
        hops += session.push(x[i : i + chunk])
        if i >= 3 * rate:
            sizes.append(session.state_bytes())
    assert len(hops) == 236 and hops[-1].time == 119.5  # the 120 s hop waits for the resampler's look-ahead
    one_hop_and_chunk = 4 * (eng.hop_samples + round(chunk * eng.sample_rate / rate))
    assert max(sizes) - min(sizes) <= one_hop_and_chunk
    assert max(sizes[len(sizes) // 2 :]) <= max(sizes[: len(sizes) // 2])
    # the window's audio, a hop held by the front-end stream, the resampler's last chunk, the column ring
    assert max(sizes) < ((2.0 + 2 * 0.5) * eng.sample_rate + chunk) * 4 + 26 * 12 * 32 * 4 + 50_000
    y = resample(x[None], rate, eng.sample_rate)[0]
    sampled = [hops[0], hops[118], hops[-1]]
    assert worst_deviation(tiny_model("passt_s.tiny"), sampled, y, eng.sample_rate) <= 1e-5
