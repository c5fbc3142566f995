"""Reading checkpoint files (format from the bytes, unsafe, truncated and empty files) and strict loading (every
mismatch listed, all-or-none side tensors, NaN/Inf refused, nothing half-loaded)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from backbones import CheckpointError, CheckpointMismatchError
from backbones.state_dict import file_format, load_strict, read_state_dict


class _Evil:
    def __reduce__(self):  # would run code when unpickled
        return (print, ("pwned",))


def test_read_state_dict_refuses_unsafe_truncated_and_empty_files(tmp_path: Path) -> None:
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
    with pytest.raises(CheckpointError, match=r"could not read checkpoint .*truncated\.pth \(torch format\)"):
        read_state_dict(truncated)
    torch.save({"iteration": 3}, tmp_path / "no_tensors.pth")
    with pytest.raises(CheckpointError, match="holds no tensors"):
        read_state_dict(tmp_path / "no_tensors.pth")
    with pytest.raises(CheckpointError, match=r"checkpoint file .*absent\.pt does not exist"):
        read_state_dict(tmp_path / "absent.pt")


def test_format_comes_from_the_bytes_not_the_extension(tmp_path: Path) -> None:
    weights = {"w": torch.arange(4.0), "b": torch.ones(2, dtype=torch.float16)}
    save_file(weights, str(tmp_path / "safetensors_named.pth"))  # torch.load would fail on it
    torch.save(weights, tmp_path / "zip_named.safetensors")
    torch.save(weights, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    expected = {
        "safetensors_named.pth": "safetensors",
        "zip_named.safetensors": "torch",
        "legacy.bin": "torch",
    }
    for name, fmt in expected.items():
        assert file_format(tmp_path / name) == fmt, name
        state = read_state_dict(tmp_path / name)
        assert set(state) == {"w", "b"} and torch.equal(state["w"], weights["w"]), name
        assert state["b"].dtype == torch.float16


@pytest.mark.parametrize(("content", "shown"), [(b"", "b''"), (b"hello world, not weights", "b'hello wor'")])
def test_files_of_neither_format_are_named(tmp_path: Path, content: bytes, shown: str) -> None:
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(
        CheckpointError,
        match=rf"x\.pt is neither a PyTorch checkpoint \(zip or pickle\) nor a safetensors file "
        rf"\(it starts with {shown}\); pass the weights file itself",
    ):
        read_state_dict(tmp_path / "x.pt")


def test_truncated_safetensors_is_a_checkpoint_error(tmp_path: Path) -> None:
    save_file({"w": torch.ones(1000)}, str(tmp_path / "w.safetensors"))
    blob = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "cut.pth").write_bytes(blob[: len(blob) - 100])
    with pytest.raises(CheckpointError, match=r"could not read checkpoint .*cut\.pth \(safetensors format\)"):
        read_state_dict(tmp_path / "cut.pth")


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))


def test_load_strict_lists_every_problem() -> None:
    module = _toy()
    state = {k: v.clone() for k, v in module.state_dict().items() if "num_batches" not in k}
    assert load_strict(module, state, "test format", "toy") == {}  # num_batches_tracked may be absent
    state["0.weight"] = torch.zeros(4, 2)
    state["extra.weight"] = torch.zeros(1)
    del state["1.bias"]
    with pytest.raises(CheckpointMismatchError) as err:
        load_strict(module, state, "test format", "toy")
    msg = str(err.value)
    assert "detected format: test format" in msg and "missing keys (1): 1.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg and "0.weight: checkpoint [4, 2] vs model [3, 2]" in msg


def test_long_lists_are_not_abbreviated() -> None:
    module = nn.Sequential(*[nn.Linear(1, 1) for _ in range(12)])
    state = {f"extra{i}": torch.zeros(1) for i in range(12)}
    state.update({f"{i}.weight": torch.zeros(2, 2) for i in range(12)})
    with pytest.raises(CheckpointMismatchError) as err:
        load_strict(module, state, "fmt", "toy")
    msg = str(err.value)
    assert f"missing keys (12): {', '.join(f'{i}.bias' for i in range(12))}" in msg
    assert f"unexpected keys (12): {', '.join(f'extra{i}' for i in range(12))}" in msg
    assert all(f"shape mismatch for {i}.weight: checkpoint [2, 2] vs model [1, 1]" in msg for i in range(12))


SIDE = {"fe.a": (2,), "fe.b": (3, 1)}


def test_side_tensors_all_or_none_and_checked_with_the_rest() -> None:
    module = _toy()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    assert load_strict(module, state, "fmt", "toy", side=SIDE) == {}  # absent: nothing to hand over
    side = {"fe.a": torch.ones(2), "fe.b": torch.zeros(3, 1)}
    taken = load_strict(module, {**state, **side}, "fmt", "toy", side=SIDE)
    assert set(taken) == set(SIDE) and torch.equal(taken["fe.a"], side["fe.a"])
    broken = {**state, "fe.a": torch.ones(5), "extra": torch.zeros(1)}
    del broken["0.bias"]
    with pytest.raises(CheckpointMismatchError) as err:
        load_strict(module, broken, "fmt", "toy", side=SIDE)
    e = err.value
    assert e.missing == ["0.bias", "fe.b"] and e.unexpected == ["extra"]
    assert e.mismatched == [("fe.a", (5,), (2,))]


def test_non_finite_weights_are_refused_and_nothing_is_loaded() -> None:
    module = _toy()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    state = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in before.items()}
    state["0.weight"][1, 0] = float("nan")
    state["1.running_var"][2] = float("inf")
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint for toy \(format: fmt\) holds NaN or Inf values in 2 tensor\(s\): 0\.weight, "
        r"1\.running_var\. The file is corrupt or comes from a diverged run",
    ):
        load_strict(module, state, "fmt", "toy")
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
    with pytest.raises(CheckpointError, match=r"in 1 tensor\(s\): fe\.a\."):
        side = {"fe.a": torch.tensor([0.0, -float("inf")]), "fe.b": torch.zeros(3, 1)}
        load_strict(module, {**before, **side}, "fmt", "toy", side=SIDE)
