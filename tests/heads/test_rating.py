from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from heads import PERCEPIANO_DIMENSIONS, build_head
from heads.rating import RatingHead
from tests.heads.helpers import random_output


def test_percepiano_dimensions_are_the_data_readme_list_in_order(shared_dir: Path) -> None:
    text = (shared_dir / "data" / "README.md").read_text()
    block = text.split("The 19 dimensions, in the order of the label vectors:")[1].split("\n\n")[0]
    names = [re.sub(r"\s+", " ", n).strip().rstrip(".") for n in block.split(";")]
    assert list(PERCEPIANO_DIMENSIONS) == names
    assert len(names) == 19


def test_default_names_are_percepiano_for_19_outputs_and_generic_otherwise() -> None:
    assert build_head("rating", 8).labels == PERCEPIANO_DIMENSIONS
    assert build_head("rating", 8, num_outputs=3).labels == ("dim_0", "dim_1", "dim_2")


@pytest.mark.parametrize("per_dimension_heads", [False, True])
def test_ratings_stay_in_the_label_range_as_a_scaled_sigmoid(per_dimension_heads: bool) -> None:
    torch.manual_seed(0)
    cfg = {"num_outputs": 4, "per_dimension_heads": per_dimension_heads, "hidden_sizes": [16]}
    bounded = build_head("rating", 8, label_range=(1.0, 7.0), **cfg).eval()
    free = build_head("rating", 8, label_range=None, **cfg).eval()
    free.load_state_dict(bounded.state_dict())
    out = random_output(batch=5, dim=8)
    out = type(out)(
        pooled=out.pooled * 1e3, sequence=out.sequence, token_times=out.token_times, grid=out.grid
    )
    z, ratings = free(out), bounded(out)
    assert ratings.shape == (5, 4)
    torch.testing.assert_close(ratings, 1.0 + 6.0 * torch.sigmoid(z), rtol=0, atol=0)
    assert ratings.min() >= 1.0 and ratings.max() <= 7.0
    assert z.abs().max() > 7.0  # the unbounded head does leave the range on these inputs


def test_per_dimension_heads_are_independent_mlps() -> None:
    torch.manual_seed(0)
    head = build_head(
        "rating",
        6,
        num_outputs=3,
        hidden_sizes=[],
        per_dimension_heads=True,
        per_dimension_hidden=5,
        label_range=None,
        activation="tanh",
    )
    x = torch.randn(4, 6)
    out = head.out
    manual = torch.stack(
        [torch.tanh(x @ out.w1[i] + out.b1[i]) @ out.w2[i] + out.b2[i] for i in range(3)], dim=1
    )
    torch.testing.assert_close(head.project(x), manual, rtol=1e-6, atol=1e-6)
    head.project(x)[:, 1].sum().backward()
    assert out.w1.grad[0].abs().sum() == 0 and out.w1.grad[2].abs().sum() == 0
    assert out.w1.grad[1].abs().sum() > 0


@pytest.mark.parametrize(("loss", "fn"), [("mse", F.mse_loss), ("l1", F.l1_loss)])
def test_loss_is_the_weighted_mean_of_dimension_losses(loss: str, fn) -> None:
    weights = [1.0, 0.0, 3.0]
    head = build_head("rating", 8, num_outputs=3, loss=loss, loss_weights=weights)
    pred, target = torch.rand(6, 3), torch.rand(6, 3)
    per_dim = torch.stack([fn(pred[:, i], target[:, i]) for i in range(3)])
    torch.testing.assert_close(head.dimension_losses(pred, target), per_dim, rtol=1e-6, atol=1e-7)
    expected = (per_dim * torch.tensor(weights)).sum() / 4.0
    torch.testing.assert_close(head.loss(pred, target), expected, rtol=1e-6, atol=1e-7)
    moved = target.clone()
    moved[:, 1] = torch.rand(6)  # a zero-weight dimension does not count
    torch.testing.assert_close(head.loss(pred, moved), head.loss(pred, target), rtol=0, atol=0)


def test_huber_loss_uses_delta_0_1() -> None:
    head = build_head("rating", 8, num_outputs=2, loss="huber")
    pred, target = torch.tensor([[0.0, 0.5]]), torch.tensor([[0.05, 0.0]])
    # quadratic inside delta: 0.5 * 0.05^2; linear outside: 0.1 * (0.5 - 0.05)
    torch.testing.assert_close(head.dimension_losses(pred, target), torch.tensor([0.00125, 0.045]))


def test_uncertainty_weighting_learns_the_log_variance_of_each_dimension() -> None:
    head = build_head("rating", 8, num_outputs=3, uncertainty_weighting=True)
    assert isinstance(head, RatingHead) and head.log_vars is not None
    pred = torch.full((64, 3), 0.5)
    g = torch.Generator().manual_seed(0)
    target = (0.5 + torch.randn(64, 3, generator=g) * torch.tensor([0.02, 0.1, 0.3])).clamp(0, 1)
    per_dim = head.dimension_losses(pred, target)
    # at log-variance 0 the loss is half the plain mean
    torch.testing.assert_close(head.loss(pred, target), 0.5 * per_dim.mean(), rtol=1e-6, atol=1e-8)
    opt = torch.optim.Adam([head.log_vars], lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        head.loss(pred, target).backward()
        opt.step()
    # d/ds [exp(-s) L + s] = 0  at  s = log L
    torch.testing.assert_close(head.log_vars.detach(), per_dim.log(), rtol=0, atol=2e-2)


def test_rating_head_fits_a_linear_target() -> None:
    torch.manual_seed(0)
    out = random_output(batch=48, dim=8, seed=1)
    mix = torch.randn(8, 4, generator=torch.Generator().manual_seed(2))
    target = torch.sigmoid(out.pooled @ mix)
    head = build_head("rating", 8, num_outputs=4, hidden_sizes=[32], dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        head.loss(head(out), target).backward()
        opt.step()
    pred = head.eval()(out).detach()
    for i in range(4):
        r = torch.corrcoef(torch.stack([pred[:, i], target[:, i]]))[0, 1]
        assert r > 0.9


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (torch.rand(4, 2), r"rating targets must be \[B, 3\], got \[4, 2\]"),
        (torch.full((4, 3), 1.5), r"rating targets must lie in label_range \[0.0, 1.0\], got \[1.5, 1.5\]"),
        (torch.full((4, 3), float("nan")), "rating targets must be finite"),
    ],
)
def test_loss_rejects_bad_targets(target: torch.Tensor, message: str) -> None:
    head = build_head("rating", 8, num_outputs=3)
    with pytest.raises(ValueError, match=message):
        head.loss(torch.rand(4, 3), target)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"loss_weights": [1.0, 2.0]}, "got 2 loss_weights for 3 dimensions"),
        ({"loss_weights": [0.0, 0.0, 0.0]}, "loss_weights must be finite, >= 0 and not all 0"),
        ({"label_range": (1.0, 1.0)}, r"label_range must be \(lo, hi\) with lo < hi"),
        ({"loss": "mae"}, "loss must be one of mse, l1, huber, got 'mae'"),
        ({"pooling": "max"}, "pooling must be one of pooled, mean, attention, freq_time, got 'max'"),
    ],
)
def test_rating_config_is_validated(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_head("rating", 8, num_outputs=3, **config)
