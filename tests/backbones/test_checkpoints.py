"""Checkpoint resolution and reading: local files and directories, URLs (served from loopback), hub ids offline,
checksums, caching, truncated or unsafe files, and strict loading's error message."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from backbones import get_pretrained_cfg
from backbones.checkpoints import (
    CheckpointError,
    CheckpointMismatchError,
    load_strict,
    read_state_dict,
    resolve_checkpoint,
)

CFG = get_pretrained_cfg("cnn14.tiny")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server on 127.0.0.1 serving a folder; yields (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_local_file_and_hf_directory(tmp_path):
    f = tmp_path / "w.pth"
    torch.save({"model": {"a": torch.ones(2)}}, f)
    assert resolve_checkpoint(f, CFG) == f
    d = tmp_path / "hf"
    d.mkdir()
    save_file({"a": torch.ones(2)}, str(d / "model.safetensors"))
    assert resolve_checkpoint(d, CFG) == d / "model.safetensors"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds none of model.safetensors, pytorch_model.bin"):
        resolve_checkpoint(tmp_path / "empty", CFG)
    with pytest.raises(CheckpointError, match="neither an existing file/directory, a URL nor a hub id"):
        resolve_checkpoint(tmp_path / "missing.pth", CFG)


def test_url_download_is_cached_and_checksum_verified(served, tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICFT_CACHE", str(tmp_path / "cache"))
    base, root = served
    torch.save({"model": {"w": torch.arange(4.0)}}, root / "weights.pth")
    digest = hashlib.sha256((root / "weights.pth").read_bytes()).hexdigest()
    cfg = dataclasses.replace(CFG, url=f"{base}/weights.pth", sha256=digest)
    path = resolve_checkpoint(cfg.url, cfg)
    assert path.parent == tmp_path / "cache" / "downloads"
    assert torch.equal(read_state_dict(path)["w"], torch.arange(4.0))
    (root / "weights.pth").unlink()  # a second call must not need the server
    assert resolve_checkpoint("pretrained", cfg) == path
    bad = dataclasses.replace(cfg, url=f"{base}/other.pth", sha256="0" * 64)
    torch.save({"x": torch.zeros(1)}, root / "other.pth")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        resolve_checkpoint(bad.url, bad)
    assert not any(p.name.startswith("tmp") for p in path.parent.iterdir())  # no partial file left


def test_unreachable_url_and_offline_hub_say_how_to_pass_a_local_path(served):
    base, _ = served
    with pytest.raises(
        CheckpointError, match=r"pass its local path: load_backbone\('cnn14.tiny', checkpoint="
    ):
        resolve_checkpoint(f"{base}/nothing-here.pth", CFG)
    with pytest.raises(CheckpointError, match="Hugging Face hub.*pass its local directory or file"):
        resolve_checkpoint("someone/some-model", CFG)
    with pytest.raises(CheckpointError, match="has no released weights"):
        resolve_checkpoint("pretrained", CFG)


class _Evil:
    def __reduce__(self):  # would run code when unpickled
        return (print, ("pwned",))


def test_read_state_dict_refuses_unsafe_truncated_and_empty_files(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"model": _Evil()}, f, protocol=2)
    with pytest.raises(CheckpointError, match="only tensors are read, never arbitrary pickled objects"):
        read_state_dict(evil)
    good = tmp_path / "good.pth"
    torch.save({"model": {"w": torch.ones(3)}, "iteration": 5}, good)
    assert set(read_state_dict(good)) == {"w"}
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="could not read checkpoint .*truncated"):
        read_state_dict(truncated)
    torch.save({"iteration": 3}, tmp_path / "no_tensors.pth")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(tmp_path / "no_tensors.pth")


def test_load_strict_lists_every_problem():
    module = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    state = {k: v.clone() for k, v in module.state_dict().items() if "num_batches" not in k}
    load_strict(module, state, "test format", "toy")  # num_batches_tracked may be absent
    state["0.weight"] = torch.zeros(4, 2)
    state["extra.weight"] = torch.zeros(1)
    del state["1.bias"]
    with pytest.raises(CheckpointMismatchError) as err:
        load_strict(module, state, "test format", "toy")
    msg = str(err.value)
    assert "detected format: test format" in msg and "missing keys (1): 1.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg and "0.weight: checkpoint [4, 2] vs model [3, 2]" in msg
