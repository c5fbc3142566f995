"""Encoder caches: CNN14's activation cache reuses the overlap's conv outputs (block 2 at a 0.5 s hop, every
block at 0.32 s / 0.64 s) and still equals the offline model to 1e-5 (measured: 0 on CPU, fp32); the registry."""

from __future__ import annotations

import math

import pytest
import torch

from backbones.cnn14 import Cnn14
from finetune.streaming import WindowSpec, register_encoder_cache
from finetune.streaming.encoders import Cnn14Activations
from tests.finetune.streaming.helpers import engine, signal, stream, tiny_model, worst_deviation

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(("hop", "kept"), [(0.5, 2), (0.32, 10), (0.64, 10)])
def test_activation_cache_equals_offline(hop: float, kept: int, monkeypatch: pytest.MonkeyPatch) -> None:
    reused = []
    encode = Cnn14Activations._encode

    def spy(self: Cnn14Activations, tokens: torch.Tensor, clean: tuple, shift: int, previous: list | None):
        reused.append(previous is not None)
        return encode(self, tokens, clean, shift, previous)

    monkeypatch.setattr(Cnn14Activations, "_encode", spy)
    eng = engine("cnn14.tiny", window_s=2.0, hop_s=hop, encoder_cache="activations")
    rate = 48000
    first = math.ceil(2.0 / hop - 1e-9) * hop  # the first full window on the hop grid
    x = signal(first + 4 * hop + 0.05, rate, seed=12)
    session = eng.open_session(rate)
    hops = stream(session, x, 7777, flush=False)
    assert len(hops) == 5 and reused == [False, True, True, True, True]
    assert len(session._encoder_state[2.0][2]) == kept
    assert worst_deviation(tiny_model("cnn14.tiny"), hops, x, rate) <= 1e-5
    plain = stream(engine("cnn14.tiny", window_s=2.0, hop_s=hop).open_session(rate), x, 7777, flush=False)
    for a, b in zip(hops, plain):
        torch.testing.assert_close(a.outputs[2.0], b.outputs[2.0], atol=1e-5, rtol=0)


def test_slow_window_reuses_across_its_own_shift() -> None:
    """A window encoded every 2 hops of 0.16 s shifts by 0.32 s: every block is reused; a partial start, whose
    windows grow, is recomputed until the window is full."""
    eng = engine(
        "cnn14.tiny",
        hop_s=0.16,
        windows=[WindowSpec(1.0), WindowSpec(2.0, every=2)],
        start="partial",
        encoder_cache="activations",
    )
    x = signal(3.0, 32000, seed=13)
    session = eng.open_session(32000)
    hops = stream(session, x, 5000, flush=False)
    assert {len(h.outputs) for h in hops} == {1, 2}
    assert worst_deviation(tiny_model("cnn14.tiny"), hops, x, 32000) <= 1e-5
    assert len(session._encoder_state[2.0][2]) == 10 and len(session._encoder_state[1.0][2]) == 8
    assert session.state_bytes() > 0


def test_registry_refuses_a_second_cache_of_one_name() -> None:
    with pytest.raises(ValueError, match="encoder cache 'activations' is registered twice for Cnn14"):
        register_encoder_cache("activations", Cnn14)(Cnn14Activations)
