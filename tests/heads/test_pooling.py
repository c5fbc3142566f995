from __future__ import annotations

import pytest
import torch

from heads.pooling import (
    POOLINGS,
    AttentionPool,
    AttentionPooling,
    FreqTimePooling,
    MeanPooling,
    PooledPooling,
    build_pooling,
    time_columns,
)
from tests.heads.helpers import make_output, random_output


def test_time_columns_average_the_frequency_tokens_of_each_time_step() -> None:
    t, f, d = 4, 3, 2
    # token (t, f) holds 10 * t + f in every channel, stored time-major at index t * F' + f
    values = torch.tensor([10.0 * ti + fi for ti in range(t) for fi in range(f)])
    seq = values[None, :, None].expand(2, t * f, d).contiguous()
    cols = time_columns(make_output(seq, (t, f)))
    assert cols.shape == (2, t, d)
    torch.testing.assert_close(cols[0, :, 0], torch.tensor([1.0, 11.0, 21.0, 31.0]), rtol=0, atol=0)


def test_time_columns_reject_a_grid_that_does_not_match_the_sequence() -> None:
    out = make_output(torch.zeros(1, 10, 4), (3, 3))
    with pytest.raises(ValueError, match=r"token grid \(3, 3\) does not match a sequence of 10 tokens"):
        time_columns(out)


def test_pooled_and_mean_pooling() -> None:
    out = random_output()
    assert PooledPooling()(out) is out.pooled
    torch.testing.assert_close(MeanPooling()(out), out.sequence.mean(dim=1), rtol=0, atol=0)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_attention_pool_starts_as_the_mean(heads: int) -> None:
    x = torch.randn(3, 7, 8)
    torch.testing.assert_close(AttentionPool(8, heads)(x), x.mean(dim=1), rtol=1e-6, atol=1e-6)


def test_attention_pool_heads_attend_independently() -> None:
    # token i is the unit vector e_i, so head 0 sees channels 0-1 and head 1 channels 2-3
    tokens = torch.eye(4)[None]
    pool = AttentionPool(4, num_heads=2)
    with torch.no_grad():
        pool.query.copy_(torch.tensor([[0.0, 80.0], [80.0, 0.0]]))  # head 0 -> token 1, head 1 -> token 2
    out = pool(tokens)[0]
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 1.0, 0.0]), rtol=0, atol=1e-6)


def test_attention_pool_rejects_a_width_not_divisible_by_the_heads() -> None:
    with pytest.raises(ValueError, match="dim=6 must be a positive multiple of num_heads=4"):
        AttentionPool(6, 4)


def test_attention_pooling_gradient_reaches_the_query() -> None:
    pooling = AttentionPooling(8)
    out = random_output()
    (pooling(out) * torch.randn(3, 8)).sum().backward()
    assert pooling.attend.query.grad is not None and pooling.attend.query.grad.abs().sum() > 0


def test_freq_time_pooling_attends_over_time_columns() -> None:
    t, f, d = 5, 3, 4
    seq = torch.randn(2, t * f, d)
    out = make_output(seq, (t, f))
    cols = seq.reshape(2, t, f, d).mean(dim=2)
    torch.testing.assert_close(
        FreqTimePooling(d, over_time="mean")(out), cols.mean(dim=1), rtol=1e-6, atol=1e-6
    )
    pooling = FreqTimePooling(d)
    with torch.no_grad():  # a sharp query picks the column whose mean has the largest first channel
        pooling.attend.query.copy_(torch.tensor([[500.0, 0.0, 0.0, 0.0]]))
    best = cols[..., 0].argmax(dim=1)
    torch.testing.assert_close(pooling(out), cols[torch.arange(2), best], rtol=0, atol=1e-5)


def test_freq_time_rejects_an_unknown_time_reduction() -> None:
    with pytest.raises(ValueError, match="over_time must be 'attention' or 'mean', got 'max'"):
        FreqTimePooling(4, over_time="max")


def test_build_pooling_knows_the_four_poolings() -> None:
    assert sorted(POOLINGS) == ["attention", "freq_time", "mean", "pooled"]
    out = random_output(dim=8)
    for name in POOLINGS:
        assert build_pooling(name, 8)(out).shape == (3, 8)
    with pytest.raises(
        ValueError, match="unknown pooling 'max'; choose one of pooled, mean, attention, freq_time"
    ):
        build_pooling("max", 8)
