"""The per-session state: the column cache computes a stream's token columns as the whole signal's, bounded;
the audio buffer reads, trims and reports its bytes."""

from __future__ import annotations

import pytest
import torch

from backbones import build_backbone
from finetune.streaming.cache import AudioBuffer, ColumnCache, tensor_bytes
from tests.finetune.streaming.helpers import signal

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["ast.tiny", "passt_s.tiny", "cnn14.tiny"])
def test_streamed_columns_equal_the_whole_signal_columns(name: str) -> None:
    torch.manual_seed(0)
    bb = build_backbone(name).eval()
    g = bb.stream_geometry()
    x = signal(3.0, g.sample_rate, seed=1)[None]
    capacity = 20
    cache = ColumnCache(bb.frontend, g, capacity)
    sizes = []
    with torch.inference_mode():
        for i in range(0, x.shape[-1], 2999):
            cache.feed(x[:, i : i + 2999])
            request = cache.request()
            if request is not None:
                cache.store(request, bb.tokenize(request.frames))
            sizes.append(cache._frames.shape[-1] if cache._frames is not None else 0)
        frames = bb.frontend.stream().push(x)  # the whole signal's frames, without AST's padding to 1024
        whole = bb.tokenize(frames)
    assert cache.fed == x.shape[-1]
    assert cache.end == (frames.shape[-1] + g.column_pad - g.column_span) // g.column_stride + 1
    assert cache.covers(cache.end - capacity, cache.end) and not cache.covers(
        cache.end - capacity - 1, cache.end
    )
    kept = cache.gather(cache.end - capacity, cache.end)
    torch.testing.assert_close(kept[0], whole[0, cache.end - capacity : cache.end], atol=1e-5, rtol=1e-5)
    assert max(sizes) <= g.min_tokenize_frames + 2999 // g.frame_hop + g.column_span + 2 * g.column_stride


def test_columns_wait_for_enough_frames() -> None:
    """CNN14's tokenize takes 32 frames: no column is computed from fewer."""
    bb = build_backbone("cnn14.tiny").eval()
    cache = ColumnCache(bb.frontend, bb.stream_geometry(), 10)
    with torch.inference_mode():
        cache.feed(signal(0.2, 32000)[None])
    assert cache.request() is None and cache.end == cache.first == 1


def test_audio_buffer_reads_trims_and_counts() -> None:
    buffer = AudioBuffer(torch.device("cpu"))
    for start in range(0, 10, 3):
        buffer.append(torch.arange(start, min(start + 3, 10), dtype=torch.float32)[None])
    assert (buffer.start, buffer.end) == (0, 10)
    assert buffer.read(2, 5).tolist() == [[2.0, 3.0, 4.0]]
    buffer.trim(6)
    assert buffer.read(6, 10).tolist() == [[6.0, 7.0, 8.0, 9.0]]
    assert buffer.nbytes() == 4 * 4
    with pytest.raises(IndexError, match=r"samples \[5, 7\) are outside the buffer \[6, 10\)"):
        buffer.read(5, 7)
    big = torch.zeros(100)
    assert tensor_bytes(big[:10], None) == 400  # a view counts the storage it keeps alive
