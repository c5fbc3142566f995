"""Checkpoint resolution: local files and directories, URLs (served from loopback), hub ids offline, checksums,
caching, and which sources are files, hub ids or neither."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from backbones import CheckpointError, get_pretrained_cfg
from backbones.checkpoints import check_checkpoint_source, resolve_checkpoint
from backbones.state_dict import read_state_dict

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
    with pytest.raises(
        CheckpointError, match=r"checkpoint file .*missing\.pth for cnn14\.tiny does not exist"
    ):
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


@pytest.mark.parametrize(
    "hub_id", ["MIT/ast-finetuned-audioset-10-10-0.4593", "owner/name.v2", "some_one/model-x"]
)
def test_hub_ids_with_dots_reach_the_hub(hub_id: str) -> None:
    """Dots are allowed in hub names: the registry's own AST id is a hub id, not a file with extension .4593.
    The tests run offline, so reaching the hub ends in its offline error, which names the repository."""
    with pytest.raises(
        CheckpointError,
        match=rf"Hugging Face hub \({re.escape(hub_id)}\) \(there is no local file or directory '{re.escape(hub_id)}'",
    ):
        resolve_checkpoint(hub_id, CFG)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "owner/model.pth",
            r"checkpoint file owner/model\.pth for cnn14\.tiny does not exist; check the path",
        ),
        ("weights.safetensors", r"checkpoint file weights\.safetensors .* does not exist"),
        ("runs/x/model.bin", r"checkpoint file runs/x/model\.bin .* does not exist"),
        ("a/b/c", r"'a/b/c' for cnn14\.tiny is neither an existing file/directory, a URL nor a hub id"),
        ("bad--name/x", r"'bad--name/x' .* is neither"),
        ("./rel/x", r"'\./rel/x' .* is neither"),
        ("", r"empty checkpoint source for cnn14\.tiny: pass a file"),
        ("   ", r"empty checkpoint source"),
    ],
)
def test_sources_that_are_not_hub_ids(source: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        resolve_checkpoint(source, CFG)
    with pytest.raises(CheckpointError, match=message):  # the same rules, checked without any network
        check_checkpoint_source(source, CFG)


def test_source_kinds_are_told_without_downloading(tmp_path: Path, served: tuple[str, Path]) -> None:
    """check_checkpoint_source never reaches out: a hub id or URL is only recognised by its form."""
    (tmp_path / "w.pth").write_bytes(b"x")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"x")
    released = get_pretrained_cfg("passt_s.audioset_swa")
    assert [
        check_checkpoint_source(str(tmp_path / "w.pth"), CFG),
        check_checkpoint_source(tmp_path / "hf", CFG),
        check_checkpoint_source("MIT/ast-finetuned-audioset-10-10-0.4593", CFG),
        check_checkpoint_source(f"{served[0]}/nothing-here.pth", CFG),  # a 404, not fetched
        check_checkpoint_source("pretrained", released),
    ] == ["file", "directory", "hub", "url", "pretrained"]
    with pytest.raises(
        CheckpointError, match=r"^cnn14\.tiny has no released weights; pass a checkpoint file"
    ):
        check_checkpoint_source("pretrained", CFG)


def test_empty_source_is_not_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_file({"a": torch.ones(2)}, "model.safetensors")  # "" would have resolved to ./model.safetensors
    assert resolve_checkpoint(".", CFG) == Path("model.safetensors")
    with pytest.raises(CheckpointError, match="empty checkpoint source"):
        resolve_checkpoint("", CFG)
