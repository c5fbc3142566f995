from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from heads import GTZAN_GENRES, build_head
from heads.classification import classification_loss
from tests.heads.helpers import make_output, random_output, separable_outputs

CLASSIFIERS = ["linear", "mlp", "attention", "crnn"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_heads_predict_one_logit_per_class_and_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    head = build_head(name, 8, num_outputs=5)
    out = random_output(batch=4, dim=8)
    with torch.no_grad():
        torch.testing.assert_close(head.eval().project(head.pool(out)), head(out), rtol=0, atol=0)
    logits = head.train()(out)
    assert logits.shape == (4, 5)
    head.loss(logits, torch.tensor([0, 1, 2, 4])).backward()
    for pname, param in head.named_parameters():
        if pname.endswith("query"):  # zero-initialised attention queries get gradient, possibly tiny
            assert param.grad is not None
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_heads_learn_a_separable_task(name: str) -> None:
    torch.manual_seed(0)
    out, labels = separable_outputs(num_classes=4)
    head = build_head(name, 16, num_outputs=4, dropout=0.0)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        head.loss(head(out), labels).backward()
        opt.step()
    head.eval()
    accuracy = (head(out).argmax(dim=1) == labels).float().mean().item()
    assert accuracy >= 0.95  # chance is 0.25


def test_heads_reject_a_backbone_of_another_width() -> None:
    head = build_head("linear", 16, num_outputs=3)
    with pytest.raises(ValueError, match="LinearHead was built for in_dim=16, got backbone width 8"):
        head(random_output(dim=8))


def test_crnn_averages_frequency_tokens_but_follows_time_order() -> None:
    torch.manual_seed(0)
    head = build_head("crnn", 8, num_outputs=3, hidden_size=6, pooling="mean").eval()
    t, f = 5, 3
    seq = torch.randn(2, t * f, 8)
    grid = seq.reshape(2, t, f, 8)
    freq_shuffled = grid[:, :, torch.tensor([2, 0, 1])].reshape(2, t * f, 8)
    time_reversed = grid.flip(1).reshape(2, t * f, 8)
    ref = head(make_output(seq, (t, f)))
    torch.testing.assert_close(head(make_output(freq_shuffled, (t, f))), ref, rtol=1e-6, atol=1e-6)
    assert (head(make_output(time_reversed, (t, f))) - ref).abs().max() > 1e-4


@pytest.mark.parametrize("pooling", ["attention", "mean", "max"])
def test_crnn_pools_the_bidirectional_states(pooling: str) -> None:
    head = build_head("crnn", 8, num_outputs=3, hidden_size=6, num_layers=2, pooling=pooling)
    assert head.pool(random_output(dim=8)).shape == (3, 12)


def test_single_label_loss_matches_cross_entropy_with_label_smoothing() -> None:
    logits = torch.randn(4, 5)
    target = torch.tensor([0, 3, 4, 1])
    log_p = logits.log_softmax(dim=1)
    nll = -log_p[torch.arange(4), target]
    eps = 0.1
    manual = ((1 - eps) * nll - eps * log_p.mean(dim=1)).mean()
    torch.testing.assert_close(classification_loss(logits, target, False, eps), manual, rtol=1e-6, atol=1e-6)
    soft = torch.softmax(torch.randn(4, 5), dim=1)  # mixup-style probability targets
    manual_soft = -(soft * log_p).sum(dim=1).mean()
    torch.testing.assert_close(classification_loss(logits, soft, False), manual_soft, rtol=1e-6, atol=1e-6)


def test_multi_label_loss_is_bce_on_smoothed_targets() -> None:
    logits = torch.randn(3, 4)
    target = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    eps = 0.2
    t = target.float() * (1 - eps) + eps / 2
    p = logits.sigmoid()
    manual = -(t * p.log() + (1 - t) * (1 - p).log()).mean()
    torch.testing.assert_close(classification_loss(logits, target, True, eps), manual, rtol=1e-5, atol=1e-6)
    head = build_head("linear", 8, num_outputs=4, multi_label=True, label_smoothing=eps)
    torch.testing.assert_close(head.loss(logits, target), manual, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head.probabilities(logits), p, rtol=0, atol=0)


def test_single_label_probabilities_are_a_softmax() -> None:
    head = build_head("mlp", 8, num_outputs=4)
    logits = torch.randn(3, 4)
    torch.testing.assert_close(head.probabilities(logits), F.softmax(logits, dim=1), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("target", "multi_label", "message"),
    [
        (torch.tensor([0, 5, 1]), False, r"class indices must be in \[0, 5\), got range \[0, 5\]"),
        (torch.tensor([[0, 1, 2]]), False, r"class-index targets must be \[B\] = \[3\], got \[1, 3\]"),
        (torch.zeros(3, 4), False, r"soft targets must be \[B, C\] = \[3, 5\], got \[3, 4\]"),
        (
            torch.full((3, 5), 0.3),
            False,
            r"soft targets must be class probabilities \(>= 0, each row summing to 1\), got row sums in "
            r"\[1\.5, 1\.5\]; pass class indices \[B\] for hard labels",
        ),
        (
            torch.tensor([[1.5, -0.5, 0, 0, 0]] * 3),
            False,
            r"soft targets must be class probabilities \(>= 0, each row summing to 1\), got row sums in \[1, 1\]",
        ),
        (torch.zeros(3), True, r"multi-label targets must be \[B, C\] = \[3, 5\], got \[3\]"),
        (torch.full((3, 5), 2.0), True, r"multi-label targets must lie in \[0, 1\]"),
    ],
)
def test_loss_rejects_malformed_targets(target: torch.Tensor, multi_label: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_loss(torch.zeros(3, 5), target, multi_label)


def test_labels_default_to_generic_names_and_must_fit_num_outputs() -> None:
    assert build_head("linear", 8, num_outputs=3).labels == ("class_0", "class_1", "class_2")
    assert build_head("linear", 8, num_outputs=10, labels=GTZAN_GENRES).labels[0] == "blues"
    with pytest.raises(ValueError, match="got 2 labels for num_outputs=3"):
        build_head("linear", 8, num_outputs=3, labels=["a", "b"])
    with pytest.raises(ValueError, match="labels must be unique"):
        build_head("linear", 8, num_outputs=2, labels=["a", "a"])


@pytest.mark.parametrize(
    ("name", "config", "message"),
    [
        ("attention", {"pooling": "mean"}, "pooling must be one of attention, freq_time, got 'mean'"),
        ("crnn", {"pooling": "freq_time"}, "pooling must be one of attention, mean, max, got 'freq_time'"),
        ("linear", {"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\), got 1.0"),
        ("mlp", {"hidden_sizes": []}, r"hidden_sizes must be positive widths, got \[\]"),
        ("mlp", {"activation": "swish"}, "activation must be one of gelu, relu, silu, tanh, got 'swish'"),
        ("linear", {"num_outputs": 0}, "num_outputs must be a positive integer, got 0"),
    ],
)
def test_config_values_are_validated(name: str, config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_head(name, 8, **{"num_outputs": 3, **config})


def test_gtzan_genres_are_the_folder_names_of_the_split_lists(shared_dir: Path) -> None:
    lines = (shared_dir / "data" / "gtzan" / "train_filtered.txt").read_text().split()
    assert sorted({line.split("/")[0] for line in lines}) == list(GTZAN_GENRES)
