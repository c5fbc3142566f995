"""The reference implementations our front-ends and backbones are compared with, built in one place for the
parity tests and the speed benchmarks.

- AST: torchaudio's ``compliance.kaldi.fbank`` as AST's data loader calls it, transformers'
  ``ASTFeatureExtractor`` and ``ASTForAudioClassification``;
- PaSST: hear21passt's ``AugmentMelSTFT`` and its ``PaSST`` network (``get_model``);
- CNN14: torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` and panns_inference's ``Cnn14``.

These packages are test/benchmark-only dependencies: every builder imports its package when called, never at
import time, and the library never imports this module. The builders take our own settings' names (those of
:class:`~backbones.frontends.KaldiFbank`, :class:`~backbones.frontends.PasstMel`,
:class:`~backbones.frontends.PannsLogMel` and the configs' ``arch``) and give their modules in eval mode.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "quiet",
    "kaldi_fbank",
    "ast_feature_extractor",
    "ast_model",
    "passt_mel",
    "passt_model",
    "TorchlibrosaLogmel",
    "panns_cnn14",
]

_AST_MEAN, _AST_STD = -4.2677393, 4.5689974


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the references: hear21passt prints in constructors and on its first forward, and several of
    them warn about deprecations and input sizes."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def kaldi_fbank(
    x: Tensor,
    target_frames: int = 1024,
    sample_rate: int = 16000,
    n_mels: int = 128,
    norm_mean: float = _AST_MEAN,
    norm_std: float = _AST_STD,
) -> Tensor:
    """torchaudio's Kaldi fbank as AST's data loader computes it, clip by clip: Hann window, no dither or
    energy, padded with zeros (log domain) or cropped to ``target_frames``, then ``(x - mean) / (2 * std)``.

    Shapes:
        x: [B, N] at ``sample_rate`` -> [B, n_mels, target_frames].
    """
    import torchaudio.compliance.kaldi as ta_kaldi

    out = []
    for item in x:
        fbank = ta_kaldi.fbank(
            item[None],
            htk_compat=True,
            sample_frequency=sample_rate,
            use_energy=False,
            window_type="hanning",
            num_mel_bins=n_mels,
            dither=0.0,
            frame_shift=10,
        )
        fbank = F.pad(fbank, (0, 0, 0, max(0, target_frames - fbank.shape[0])))[:target_frames]
        out.append(((fbank - norm_mean) / (norm_std * 2)).T)
    return torch.stack(out)


def ast_feature_extractor(
    sample_rate: int = 16000,
    n_mels: int = 128,
    target_frames: int = 1024,
    norm_mean: float = _AST_MEAN,
    norm_std: float = _AST_STD,
) -> Any:
    """transformers' ``ASTFeatureExtractor`` (numpy in, ``input_values`` ``[B, T, n_mels]`` out)."""
    from transformers import ASTFeatureExtractor

    return ASTFeatureExtractor(
        sampling_rate=sample_rate,
        num_mel_bins=n_mels,
        max_length=target_frames,
        do_normalize=True,
        mean=norm_mean,
        std=norm_std,
    )


def ast_model(arch: Mapping[str, Any], num_labels: int = 527) -> nn.Module:
    """transformers' ``ASTForAudioClassification`` (SDPA attention) from an AST config's ``arch`` settings,
    random init, eval mode."""
    from transformers import ASTConfig, ASTForAudioClassification

    config = ASTConfig(**arch, num_labels=num_labels, attn_implementation="sdpa")
    return ASTForAudioClassification(config).eval()


def passt_mel(
    hop_length: int = 320,
    n_mels: int = 128,
    sample_rate: int = 32000,
    win_length: int = 800,
    n_fft: int = 1024,
    f_min: float = 0.0,
    fmin_aug_range: int = 10,
    fmax_aug_range: int = 2000,
    masks: tuple[int, int] = (48, 192),
) -> nn.Module:
    """hear21passt's ``AugmentMelSTFT`` as ``get_basic_model`` configures it, in eval mode. ``masks`` are its
    SpecAugment (frequency, time) widths, applied in train mode only; ``(0, 0)`` leaves the fmin/fmax jitter
    alone in train mode."""
    from hear21passt.models.preprocess import AugmentMelSTFT

    with quiet():
        mel = AugmentMelSTFT(
            n_mels=n_mels,
            sr=sample_rate,
            win_length=win_length,
            hopsize=hop_length,
            n_fft=n_fft,
            freqm=masks[0],
            timem=masks[1],
            htk=False,
            fmin=f_min,
            fmax=None,
            norm=1,
            fmin_aug_range=fmin_aug_range,
            fmax_aug_range=fmax_aug_range,
        )
    return mel.eval()


def passt_model(
    arch: str,
    input_tdim: int = 998,
    stride: int = 10,
    size: Mapping[str, int] | None = None,
    num_classes: int = 527,
) -> nn.Module:
    """hear21passt's PaSST network, random init, eval mode. ``arch`` is ``get_model``'s name (e.g.
    ``"passt_s_swa_p16_128_ap476"``, ``"passt_20sec"``); ``size`` (``embed_dim``, ``depth``, ``num_heads``)
    builds the class ``get_model`` instantiates with the same other arguments at another width instead.

    The network takes mel frames ``[B, 1, 128, T]`` and returns ``(logits, features)``.
    """
    from hear21passt.models.passt import PaSST, get_model

    with quiet():
        if size is not None:
            net = PaSST(
                img_size=(128, input_tdim),
                patch_size=16,
                stride=(stride, stride),
                in_chans=1,
                num_classes=num_classes,
                distilled=True,
                **size,
            )
        else:
            net = get_model(
                arch=arch,
                pretrained=False,
                n_classes=num_classes,
                in_channels=1,
                fstride=stride,
                tstride=stride,
                input_fdim=128,
                input_tdim=input_tdim,
            )
    return net.eval()


class TorchlibrosaLogmel(nn.Module):
    """torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as panns_inference's ``Cnn14`` configures them.

    ``spectrogram.stft.conv_real`` / ``conv_imag`` and ``logmel.melW`` are the tensors a PANNs file stores.

    Shapes:
        forward: [B, N] -> [B, n_mels, T] (our layout; torchlibrosa's is [B, 1, T, n_mels]).
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        n_fft: int = 1024,
        hop_length: int = 320,
        f_max: float = 14000.0,
        n_mels: int = 64,
        f_min: float = 50.0,
    ) -> None:
        super().__init__()
        from torchlibrosa.stft import LogmelFilterBank, Spectrogram

        self.spectrogram = Spectrogram(
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=n_fft,
            window="hann",
            center=True,
            pad_mode="reflect",
            freeze_parameters=True,
        )
        self.logmel = LogmelFilterBank(
            sr=sample_rate,
            n_fft=n_fft,
            n_mels=n_mels,
            fmin=f_min,
            fmax=f_max,
            ref=1.0,
            amin=1e-10,
            top_db=None,
            freeze_parameters=True,
        )
        self.eval()

    def stored_tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        """The STFT real and imaginary conv weights and the mel matrix, as a PANNs checkpoint stores them."""
        stft = self.spectrogram.stft
        return stft.conv_real.weight, stft.conv_imag.weight, self.logmel.melW

    def forward(self, x: Tensor) -> Tensor:
        return self.logmel(self.spectrogram(x))[:, 0].mT


def panns_cnn14(
    sample_rate: int = 32000,
    n_fft: int = 1024,
    hop_length: int = 320,
    f_max: float = 14000.0,
    n_mels: int = 64,
    f_min: float = 50.0,
    num_classes: int = 527,
) -> nn.Module:
    """panns_inference's ``Cnn14`` (front-end included), random init, eval mode. Its forward returns a dict with
    ``embedding`` and ``clipwise_output``."""
    from panns_inference.models import Cnn14

    model = Cnn14(
        sample_rate=sample_rate,
        window_size=n_fft,
        hop_size=hop_length,
        mel_bins=n_mels,
        fmin=f_min,
        fmax=f_max,
        classes_num=num_classes,
    )
    return model.eval()
