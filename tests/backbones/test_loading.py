"""``load_backbone`` end to end on bad sources and broken files: each error names what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backbones import CheckpointError, build_backbone, load_backbone
from backbones.config import ConfigError


def test_empty_checkpoint_is_refused_not_read_as_the_current_directory() -> None:
    with pytest.raises(CheckpointError, match=r"empty checkpoint source for cnn14\.tiny: pass a file"):
        load_backbone("cnn14.tiny", checkpoint="")


def test_registered_ast_hub_id_is_a_hub_id() -> None:
    """``MIT/ast-finetuned-audioset-10-10-0.4593`` used to be refused as a file with extension ``.4593``; offline
    (as the tests run), it now reaches the hub's offline error."""
    with pytest.raises(
        CheckpointError, match=r"Hugging Face hub \(MIT/ast-finetuned-audioset-10-10-0\.4593\)"
    ):
        load_backbone("ast.tiny", checkpoint="MIT/ast-finetuned-audioset-10-10-0.4593")


def test_safetensors_file_with_a_pth_name_loads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    saved = build_backbone("cnn14.tiny")
    save_file(saved.state_dict(), str(tmp_path / "weights.pth"))
    loaded = load_backbone("cnn14.tiny", checkpoint=tmp_path / "weights.pth")
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_safetensors_bytes_corrupted_into_nan_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "corrupt.safetensors"
    save_file(build_backbone("cnn14.tiny").state_dict(), str(path))
    blob = bytearray(path.read_bytes())
    header_len = int.from_bytes(blob[:8], "little")
    start, _ = json.loads(blob[8 : 8 + header_len])["fc1.weight"]["data_offsets"]
    blob[8 + header_len + start : 8 + header_len + start + 8] = b"\xff" * 8  # two float32 NaNs
    path.write_bytes(bytes(blob))
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint for cnn14\.tiny \(format: panns\) holds NaN or Inf values in 1 tensor\(s\): fc1\.weight\. "
        r"The file is corrupt",
    ):
        load_backbone("cnn14.tiny", checkpoint=path)


def test_unknown_override_is_named_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"passt_s\.tiny: unknown option\(s\) 'dft'"):
        load_backbone("passt_s.tiny", checkpoint=tmp_path / "never-read.pt", dft="fft")
