"""The Backbone contract, checked for every registered ``*.tiny`` backbone: registering a new family with a tiny
entry is enough to have it tested here.

Output shapes; a time-major ``sequence`` whose ``view(B, *grid, D)`` matches ``token_times``; ``frame_hop``,
``token_stride`` and ``sample_rate`` consistent with ``token_times`` and with the tokens' shift under a shifted
input; ``layer_groups`` covering every parameter once; default LoRA targets that peft can wrap; the three stages
composing to ``forward`` exactly; eval-mode determinism; and the input rules (finite waveforms, the length limit).
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from backbones import Backbone, InputTooLongError, NonFiniteInputError, build_backbone, list_backbones
from tests.audio_signals import music, noise

TINY = list_backbones("*.tiny")
BATCH, SECONDS = 2, 4.0

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_family_has_a_tiny_entry() -> None:
    families = {name.split(".", 1)[0] for name in list_backbones()}
    assert families == {name.split(".", 1)[0] for name in TINY} >= {"ast", "passt_s", "cnn14"}


@pytest.fixture(scope="module", params=TINY)
def case(request: pytest.FixtureRequest) -> SimpleNamespace:
    """A tiny backbone with its AudioSet head, in eval mode, and its output on a batch of two clips."""
    torch.manual_seed(0)
    model = build_backbone(request.param, keep_pretrained_head=True).eval()
    x = music(BATCH, int(SECONDS * model.sample_rate), model.sample_rate, seed=1)
    with torch.inference_mode():
        out = model(x, output_hidden_states=True)
    return SimpleNamespace(name=request.param, model=model, x=x, out=out)


def test_output_shapes(case: SimpleNamespace) -> None:
    model, out = case.model, case.out
    t, f = out.grid
    assert isinstance(t, int) and isinstance(f, int) and t >= 1 and f >= 1
    assert out.pooled.shape == (BATCH, model.embed_dim)
    assert out.sequence.shape == (BATCH, t * f, model.embed_dim)
    assert out.token_times.shape == (t * f,) and out.token_times.dtype == torch.float32
    assert out.logits.shape == (BATCH, model.pretrained_cfg.num_classes)
    assert len(out.hidden_states) == model.num_layers
    assert all(h.shape[0] == BATCH and h.dim() == 3 for h in out.hidden_states)
    for tensor in (out.pooled, out.sequence, out.logits):
        assert torch.isfinite(tensor).all()


def test_sequence_is_time_major_and_matches_token_times(case: SimpleNamespace) -> None:
    model, out = case.model, case.out
    t, f = out.grid
    grid_view = out.sequence.view(BATCH, t, f, model.embed_dim)
    assert torch.equal(grid_view.reshape(BATCH, t * f, -1), out.sequence)
    times = out.token_times.view(t, f)
    assert torch.equal(times, times[:, :1].expand(t, f))  # one time per column, repeated over F'
    assert bool((times[1:, 0] > times[:-1, 0]).all())  # monotone over the time columns


def test_hop_stride_and_sample_rate_agree_with_token_times(case: SimpleNamespace) -> None:
    """Columns are a whole number of token strides apart and the first one is centred inside the first step."""
    model, out = case.model, case.out
    assert model.frame_hop == model.frontend.hop_length
    assert model.sample_rate == model.frontend.sample_rate == model.pretrained_cfg.sample_rate
    column = model.token_stride * model.frame_hop / model.sample_rate  # seconds per tokenize column
    starts = out.token_times.view(*out.grid)[:, 0].double()
    steps = starts.diff()
    assert torch.allclose(steps, steps[0].expand_as(steps), atol=1e-6, rtol=0)
    ratio = float(steps[0]) / column
    assert round(ratio) >= 1 and math.isclose(ratio, round(ratio), abs_tol=1e-4)
    assert 0 < float(starts[0]) < float(steps[0])


def test_tokens_shift_by_one_column_per_token_stride(case: SimpleNamespace) -> None:
    """``token_stride * frame_hop`` samples of delay move every interior token column by exactly one."""
    model = case.model
    shift = model.token_stride * model.frame_hop
    with torch.inference_mode():
        tokens = model.tokenize(model.frontend(case.x))
        shifted = model.tokenize(model.frontend(case.x[:, shift:]))
    real_frames = model.frontend.num_frames(case.x.shape[-1] - shift)  # AST pads beyond its real frames
    interior = slice(2, real_frames // model.token_stride - 4)
    later = slice(interior.start + 1, interior.stop + 1)
    assert interior.stop - interior.start > 5
    torch.testing.assert_close(shifted[:, interior], tokens[:, later], rtol=1e-4, atol=1e-4)


def test_stages_compose_to_forward_exactly(case: SimpleNamespace) -> None:
    model = case.model
    with torch.inference_mode():
        staged = model.encode(model.tokenize(model.frontend(case.x)), output_hidden_states=True)
    for field in ("pooled", "sequence", "token_times", "logits"):
        assert torch.equal(getattr(staged, field), getattr(case.out, field)), field
    assert staged.grid == case.out.grid
    assert all(torch.equal(a, b) for a, b in zip(staged.hidden_states, case.out.hidden_states))


def test_eval_mode_is_deterministic(case: SimpleNamespace) -> None:
    torch.manual_seed(123)  # a different global RNG state must not matter in eval mode
    with torch.inference_mode():
        again = case.model(case.x)
    assert torch.equal(again.pooled, case.out.pooled) and torch.equal(again.logits, case.out.logits)


def test_layer_groups_cover_every_parameter_once(case: SimpleNamespace) -> None:
    groups = case.model.layer_groups()
    ids = [id(p) for group in groups for p in group]
    assert len(groups) >= 2 and all(groups)
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in case.model.parameters()}


def test_default_lora_targets_are_wrapped_by_peft(case: SimpleNamespace) -> None:
    model = copy.deepcopy(case.model)
    targets = model.default_lora_targets
    named = [n for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] in targets]
    assert targets and named
    inject_adapter_in_model(LoraConfig(r=2, target_modules=list(targets)), model)
    wrapped = sorted(n for n, m in model.named_modules() if isinstance(m, LoraLayer))
    assert wrapped == sorted(named)
    with torch.inference_mode():
        out = model(case.x)  # lora_B starts at zero: the same function
    torch.testing.assert_close(out.pooled, case.out.pooled, rtol=1e-5, atol=1e-6)


def test_non_finite_waveforms_are_refused(case: SimpleNamespace) -> None:
    model = case.model
    for bad in (float("nan"), float("inf")):
        x = case.x.clone()
        x[1, 100] = bad
        with pytest.raises(
            NonFiniteInputError,
            match=rf"{case.name}: the waveform holds NaN or Inf samples \(batch items \[1\]\); check the audio",
        ):
            model(x)


def test_length_rule(case: SimpleNamespace) -> None:
    """Models with learned time positions take up to ``max_samples`` and refuse more; the others any length."""
    model: Backbone = case.model
    limit = model.max_samples
    with torch.inference_mode():
        if limit is None:
            assert model.max_frames is None
            assert model(noise(1, 30 * model.sample_rate)).grid[0] > case.out.grid[0]
            return
        assert model.max_seconds == limit / model.sample_rate
        assert model.frontend.num_frames(limit) == model.max_frames
        assert torch.isfinite(model(noise(1, limit)).pooled).all()
        with pytest.raises(
            InputTooLongError, match=rf"{case.name} covers at most .* Crop the input, window it"
        ):
            model(noise(1, limit + 1))


def test_numpy_input_gives_the_tensor_output(case: SimpleNamespace) -> None:
    """A numpy array (float32 or float64, read-only, reversed strides) is taken as the same waveform."""
    with torch.inference_mode():
        from_numpy = case.model(case.x.numpy())
        as_float64 = case.model(case.x.double().numpy())
        reversed_twice = case.x.numpy()[:, ::-1].copy()[:, ::-1]  # negative strides
        reversed_twice.flags.writeable = False
        from_view = case.model(reversed_twice)
    for out in (from_numpy, as_float64, from_view):
        assert torch.equal(out.pooled, case.out.pooled) and torch.equal(out.logits, case.out.logits)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: (x.numpy() * 32767).astype("int16"), "got a numpy int16 array (integer audio samples: divide int16 PCM by 32768)"),
        (lambda x: (x * 32767).to(torch.int32), "got a torch.int32 tensor (integer audio samples: divide int16 PCM by 32768)"),
        (lambda x: x.tolist(), None),
    ],
)  # fmt: skip
def test_other_input_kinds_are_refused_with_what_to_do(case: SimpleNamespace, make, message) -> None:
    if message is None:
        expected = f"{case.name}: the waveform must be a torch.Tensor or a numpy array, got list"
    else:
        expected = f"{case.name}: the waveform must hold floating-point numbers, {message}"
    with pytest.raises(TypeError) as info:
        case.model(make(case.x))
    assert str(info.value) == expected


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float64, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 5e-3)]
)
def test_a_model_cast_to_another_dtype_takes_float32_audio(case: SimpleNamespace, dtype, tolerance) -> None:
    """The front-end keeps computing in float32 (its buffers stay float32), the encoder runs in the cast dtype,
    and the result is the float32 model's to that dtype's precision."""
    model = copy.deepcopy(case.model).to(dtype)
    assert {t.dtype for t in (*model.frontend.buffers(), *model.frontend.parameters())} == {torch.float32}
    assert model.compute_dtype == dtype
    with torch.inference_mode():
        out = model(case.x)
    assert out.pooled.dtype == dtype and out.logits.dtype == dtype
    error = (out.pooled.double() - case.out.pooled.double()).norm() / case.out.pooled.double().norm()
    assert float(error) < tolerance
