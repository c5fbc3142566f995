"""Torch-native front-ends: Kaldi fbank (AST), PaSST's mel (PaSST-S) and PANNs' log-mel (CNN14).

All three map a waveform batch ``[B, N]`` to float32 features ``[B, n_mels, T]`` with batched tensor ops only
(unfold / ``torch.stft`` / ``torch.fft`` / a conv-DFT, one matmul with the mel bank), so they run on CPU or GPU;
windows, DFT matrices and filterbanks are non-persistent buffers (they follow ``.to()`` and stay out of
``state_dict``). Defaults reproduce the original front-ends (see ``shared/reference/checkpoints.md`` section 2):

- :class:`KaldiFbank` (``kaldi.py``): torchaudio's ``kaldi.fbank`` as AST calls it, padded/cropped to 1024
  frames, normalised.
- :class:`PasstMel` (``passt.py``): hear21passt's ``AugmentMelSTFT`` (fmin/fmax jitter in ``train()`` mode only;
  the SpecAugment masks of the original are not part of the front-end, they belong to data augmentation).
- :class:`PannsLogMel` (``panns.py``): torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as CNN14
  configures them.

Each also offers ``compression="pcen"`` (per-channel energy normalisation on the mel power, replacing the log and
the fixed normalisation) and ``cmvn=True`` (per-item, per-mel-bin mean/variance normalisation over time;
``normalise.py``), and ``stream()`` for chunked input (:class:`FrontendStream`, ``stream.py``). The pipeline they
share is :class:`MelFrontend` (``base.py``).
"""

from .base import MelFrontend
from .kaldi import KaldiFbank, kaldi_mel_banks
from .normalise import PCENParams
from .panns import PannsLogMel, panns_stft_weights, slaney_mel_banks
from .passt import PasstMel
from .stream import FrontendStream

__all__ = [
    "KaldiFbank",
    "PasstMel",
    "PannsLogMel",
    "MelFrontend",
    "FrontendStream",
    "PCENParams",
    "kaldi_mel_banks",
    "slaney_mel_banks",
    "panns_stft_weights",
]
