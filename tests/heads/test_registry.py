from __future__ import annotations

import json

import pytest
import torch

import heads
import heads.registry as registry
from backbones.config import ConfigError, StrictConfig
from heads import build_head, head_config_class, list_heads, register_head
from heads.classification import ClassificationConfig, LinearHead
from tests.heads.helpers import random_output

ROUND_TRIP_CONFIGS = [
    ("linear", {"num_outputs": 3, "pooling": "freq_time", "attention_heads": 2}),
    ("mlp", {"num_outputs": 4, "hidden_sizes": [16, 8], "activation": "relu", "multi_label": True}),
    ("attention", {"num_outputs": 2, "labels": ["speech", "music"], "attention_heads": 4}),
    ("crnn", {"num_outputs": 3, "hidden_size": 5, "num_layers": 2, "pooling": "max"}),
    (
        "rating",
        {
            "num_outputs": 5,
            "per_dimension_heads": True,
            "label_range": [1, 7],
            "loss_weights": [1] * 5,
            "uncertainty_weighting": True,
        },
    ),
]


def test_all_heads_are_registered() -> None:
    assert list_heads() == ["attention", "crnn", "hybrid", "linear", "mlp", "rating"]


def test_unknown_head_lists_the_known_ones() -> None:
    with pytest.raises(
        KeyError,
        match="unknown head 'transformer'. Known heads: attention, crnn, hybrid, linear, mlp, rating",
    ):
        build_head("transformer", 8, num_outputs=2)


def test_unknown_config_keys_are_all_named_with_suggestions() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^unknown key\(s\) hiden_sizes \(did you mean 'hidden_sizes'\?\), zzz; "
        r"MLPConfig takes: activation, attention_heads",
    ):
        build_head("mlp", 8, num_outputs=2, hiden_sizes=[4], zzz=1)


def test_config_values_are_type_checked_with_their_key() -> None:
    assert heads.StrictConfig is StrictConfig  # one strict-config system, re-exported
    with pytest.raises(ConfigError, match=r"^hidden_sizes: expected tuple\[int, \.\.\.\], got '64'$"):
        build_head("mlp", 8, num_outputs=2, hidden_sizes="64")
    with pytest.raises(ConfigError, match=r"^num_outputs: expected int, got True$"):
        build_head("linear", 8, num_outputs=True)
    with pytest.raises(ConfigError, match=r"^missing required key\(s\) num_outputs$"):
        build_head("linear", 8)
    with pytest.raises(ConfigError, match=r"^RatingConfig: got 2 loss_weights for 3 dimensions$"):
        build_head("rating", 8, num_outputs=3, loss_weights=[1, 2])


@pytest.mark.parametrize(("name", "config"), ROUND_TRIP_CONFIGS)
def test_config_round_trips_through_json_and_rebuilds_the_same_head(name: str, config: dict) -> None:
    torch.manual_seed(0)
    head = build_head(name, 8, **config).eval()
    saved = json.loads(json.dumps(head.config.to_dict()))
    assert head_config_class(name).from_dict(saved) == head.config
    rebuilt = build_head(name, 8, **saved).eval()
    rebuilt.load_state_dict(head.state_dict())
    out = random_output(dim=8)
    torch.testing.assert_close(rebuilt(out), head(out), rtol=0, atol=0)


def test_a_name_cannot_be_registered_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_HEADS", dict(registry._HEADS))
    with pytest.raises(ValueError, match="head 'linear' is registered twice"):
        register_head("linear", ClassificationConfig)(LinearHead)


def test_register_head_makes_a_new_head_buildable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_HEADS", dict(registry._HEADS))

    @register_head("linear_copy", ClassificationConfig)
    class LinearCopy(LinearHead):
        pass

    head = build_head("linear_copy", 8, num_outputs=2)
    assert isinstance(head, LinearCopy) and head.name == "linear_copy"
    assert "linear_copy" in list_heads()
