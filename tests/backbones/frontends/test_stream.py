"""FrontendStream: chunk-by-chunk frames equal the whole-signal frames, emitted as soon as possible; its
state and errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from backbones.frontends import KaldiFbank, PannsLogMel, PasstMel
from tests.audio_signals import music
from tests.backbones.frontends.helpers import FRONTENDS, signal

pytestmark = pytest.mark.usefixtures("one_thread")


def streamed(frontend: torch.nn.Module, x: Tensor, chunk: int) -> Tensor:
    stream = frontend.stream()
    parts = [stream.push(x[:, i : i + chunk]) for i in range(0, x.shape[-1], chunk)]
    return torch.cat([*parts, stream.flush()], dim=-1)


@pytest.mark.parametrize("chunk", [1, 317, 16001])
@pytest.mark.parametrize("name", list(FRONTENDS))
def test_stream_equals_whole_signal(name: str, chunk: int) -> None:
    """Every frame, the reflect-padded edges of the centred STFTs included, to float rounding."""
    frontend = FRONTENDS[name]()
    seconds = 0.2 if chunk == 1 else 2.1
    x = music(2, int(seconds * frontend.sample_rate), frontend.sample_rate, seed=5)
    whole = frontend(x)
    assert whole.shape[-1] == frontend.num_frames(x.shape[-1])
    torch.testing.assert_close(streamed(frontend, x, chunk), whole, atol=1e-5, rtol=1e-6)


def test_kaldi_stream_gives_the_unpadded_frames_of_the_ast_input() -> None:
    frontend = KaldiFbank()
    x = signal("music", 3.3, 16000)
    whole = frontend(x)
    frames = streamed(frontend, x, 4000)
    assert frames.shape[-1] == 1 + (x.shape[-1] - 400) // 160 < 1024
    torch.testing.assert_close(frames, whole[..., : frames.shape[-1]], atol=1e-6, rtol=0)


def test_stream_emits_each_frame_as_soon_as_its_samples_are_in() -> None:
    x = signal("noise", 1.0, 32000)
    kaldi = KaldiFbank().stream()
    assert [kaldi.push(x[:, a:b]).shape[-1] for a, b in [(0, 399), (399, 400), (400, 559), (559, 560)]] == [
        0,
        1,
        0,
        1,
    ]
    assert kaldi.flush().shape == (3, 128, 0)
    passt = PasstMel().eval().stream()  # frame 0 needs 512 pre-emphasised samples plus one for the reflection
    assert [passt.push(x[:, a:b]).shape[-1] for a, b in [(0, 513), (513, 514), (514, 834), (834, 835)]] == [
        0,
        1,
        1,
        0,
    ]


def test_stream_state_resets_after_flush() -> None:
    frontend = PannsLogMel(compression="pcen")
    x = signal("music", 1.0, 32000)
    stream = frontend.stream()
    first = torch.cat([stream.push(x), stream.flush()], dim=-1)
    second = torch.cat([stream.push(x), stream.flush()], dim=-1)
    assert torch.equal(first, second)


def test_stream_errors() -> None:
    x = signal("noise", 1.0, 32000)
    stream = PasstMel().eval().stream()
    with pytest.raises(ValueError, match=r"before any push"):
        stream.flush()
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        stream.push(x[0])
    stream.push(x[:, :100])
    with pytest.raises(ValueError, match=r"carries 3 signals, got a chunk of 1"):
        stream.push(x[:1, 100:200])
    with pytest.raises(ValueError, match=r"at least 514 samples.*got 100"):
        stream.flush()
    with pytest.raises(ValueError, match=r"CMVN"):
        KaldiFbank(cmvn=True).stream()
