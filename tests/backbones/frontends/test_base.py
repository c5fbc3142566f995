"""The contract every front-end shares (MelFrontend): buffers only, float32 under autocast, differentiable,
input checks, the length arithmetic and the constructor options."""

from __future__ import annotations

import pytest
import torch

from backbones.frontends import KaldiFbank, PannsLogMel, PasstMel
from tests.audio_signals import noise
from tests.backbones.frontends.helpers import FRONTENDS, signal

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["kaldi", "passt", "panns_32k", "panns_fft_32k"])
def test_buffers_only_and_float32_under_autocast(name: str) -> None:
    frontend = FRONTENDS[name]()
    assert list(frontend.parameters()) == [] and frontend.state_dict() == {}
    x = signal("music", 1.0, frontend.sample_rate)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = frontend(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, frontend(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(frontend(x.double()), frontend(x), atol=0, rtol=0)
    moved = frontend.to("meta")
    assert {b.device.type for b in moved.buffers()} == {"meta"}


@pytest.mark.parametrize("name", ["kaldi", "passt", "panns_32k", "panns_fft_32k"])
def test_differentiable_with_respect_to_the_waveform(name: str) -> None:
    frontend = FRONTENDS[name]()
    x = signal("music", 1.0, frontend.sample_rate)[:1].clone().requires_grad_()
    feats = frontend(x)
    assert torch.equal(feats, frontend(x.detach()))  # the autograd path computes the same numbers
    feats.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("name", "shortest"), [("kaldi", 400), ("passt", 514), ("panns_32k", 513), ("panns_16k", 257)]
)
def test_too_short_input_is_rejected(name: str, shortest: int) -> None:
    frontend = FRONTENDS[name]()
    assert frontend.min_samples == shortest
    assert frontend(noise(2, shortest)).shape == (2, frontend.n_mels, frontend.num_frames(shortest))
    with pytest.raises(
        ValueError, match=rf"needs at least {shortest} samples \(.* ms at .* Hz\), got {shortest - 1}"
    ):
        frontend(noise(2, shortest - 1))


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(16000), torch.zeros(1, 1, 16000), torch.zeros(2, 16000, dtype=torch.int16), [0.0] * 16000],
)
def test_bad_waveforms_are_rejected(bad: object) -> None:
    with pytest.raises(
        ValueError, match=r"KaldiFbank expects a (waveform batch \[batch, samples\]|floating-point)"
    ):
        KaldiFbank()(bad)


@pytest.mark.parametrize("name", ["kaldi", "passt", "panns_32k", "panns_16k"])
def test_max_samples_for_inverts_num_frames(name: str) -> None:
    frontend = FRONTENDS[name]()
    for frames in (1, 2, 101, 1024):
        longest = frontend.max_samples_for(frames)
        assert frontend.num_frames(longest) == frames and frontend.num_frames(longest + 1) == frames + 1
        if longest >= frontend.min_samples:
            assert frontend(noise(1, longest)).shape[-1] == frames


def test_option_names_are_every_constructor_option() -> None:
    pcen = {"pcen_gain", "pcen_bias", "pcen_power", "pcen_time_constant", "pcen_eps"}
    common = {"sample_rate", "n_mels", "hop_length", "n_fft", "f_min", "f_max", "compression", "cmvn", *pcen}
    assert PannsLogMel.option_names() == {*common, "amin", "dft"}
    assert KaldiFbank.option_names() == {
        *common,
        "frame_length",
        "preemphasis",
        "remove_dc",
        "target_frames",
        "norm_mean",
        "norm_std",
    }
    assert PasstMel.option_names() == {
        *common,
        "win_length",
        "preemphasis",
        "fmin_aug_range",
        "fmax_aug_range",
        "log_offset",
        "norm_mean",
        "norm_std",
    }
