"""The strict config system: keys, types, nested configs, paths in messages, suggestions, round trips."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from backbones.config import ConfigError, StrictConfig, did_you_mean, from_dict, to_dict


@dataclass
class Inner(StrictConfig):
    hidden_sizes: tuple[int, ...] = (4,)
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")


@dataclass
class Outer(StrictConfig):
    name: str
    steps: int = 1
    lr: float = 1e-3
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    window: tuple[float, float] | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)
    maybe: Inner | None = None
    either: tuple[str, ...] | str | None = None


def test_values_are_checked_and_converted() -> None:
    cfg = Outer.from_dict(
        {
            "name": "x",
            "steps": 3,
            "lr": "1e-4",  # YAML 1.1 reads this as a string
            "flag": True,
            "mode": "slow",
            "window": [1, 2.5],
            "tags": ("a", "b"),
            "extra": {"any": [1, "two"]},
            "weights": {"a": 1},
            "inner": {"hidden_sizes": [8, 2], "scale": 2},
            "maybe": {"scale": 0.5},
            "either": "qkv",
        }
    )
    assert cfg == Outer(
        name="x",
        steps=3,
        lr=1e-4,
        flag=True,
        mode="slow",
        window=(1.0, 2.5),
        tags=["a", "b"],
        extra={"any": [1, "two"]},
        weights={"a": 1.0},
        inner=Inner(hidden_sizes=(8, 2), scale=2.0),
        maybe=Inner(scale=0.5),
        either="qkv",
    )
    assert type(cfg.lr) is float and type(cfg.window[0]) is float and type(cfg.weights["a"]) is float
    assert Outer.from_dict({"name": "x", "either": ["q", "v"]}).either == ("q", "v")
    assert Outer.from_dict({"name": "x", "maybe": None}).maybe is None
    built = Inner(scale=3.0)
    assert Outer.from_dict({"name": "x", "inner": built}).inner is built  # an instance is taken as is


def test_to_dict_round_trips_through_json() -> None:
    cfg = Outer(name="x", window=(0.0, 1.0), tags=["a"], inner=Inner((3, 2)), maybe=Inner(), either=("q",))
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["inner"] == {"hidden_sizes": [3, 2], "scale": 1.0} and data["either"] == ["q"]
    assert Outer.from_dict(data) == cfg
    assert to_dict(cfg) == cfg.to_dict()
    with pytest.raises(TypeError, match="to_dict expects a dataclass instance, got dict"):
        to_dict({"a": 1})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "steps": True}, "cfg.steps: expected int, got True"),  # bool is not an int
        ({"name": "x", "steps": 2.0}, "cfg.steps: expected int, got 2.0"),
        ({"name": "x", "lr": "fast"}, "cfg.lr: expected float, got 'fast'"),
        ({"name": "x", "flag": 1}, "cfg.flag: expected bool, got 1"),
        ({"name": 3}, "cfg.name: expected str, got 3"),
        (
            {"name": "x", "mode": "slwo"},
            "cfg.mode: expected one of 'fast', 'slow', got 'slwo' (did you mean 'slow'?)",
        ),
        ({"name": "x", "window": [1, 2, 3]}, "cfg.window: needs 2 items, got 3: [1, 2, 3]"),
        ({"name": "x", "window": "1,2"}, "cfg.window: expected tuple[float, float] or null, got '1,2'"),
        ({"name": "x", "tags": ["a", 2]}, "cfg.tags[1]: expected str, got 2"),
        ({"name": "x", "weights": {"a": "b"}}, "cfg.weights.a: expected float, got 'b'"),
        ({"name": "x", "inner": [1]}, "cfg.inner: expected a mapping, got list"),
        (
            {"name": "x", "inner": {"hidden_sizes": [1, "2"]}},
            "cfg.inner.hidden_sizes[1]: expected int, got '2'",
        ),
        ({"name": "x", "maybe": {"scale": "big"}}, "cfg.maybe.scale: expected float, got 'big'"),
        ({"name": "x", "maybe": 3}, "cfg.maybe: expected a mapping (Inner) or null, got 3"),
        ({"name": "x", "either": 3}, "cfg.either: expected tuple[str, ...] or str or null, got 3"),
        ({"steps": 2}, "missing required key(s) cfg.name"),
    ],
)
def test_wrong_values_name_their_path(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Outer.from_dict(data, "cfg")
    assert str(info.value) == message


def test_unknown_keys_are_all_named_by_path_with_suggestions() -> None:
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"name": "x", "inner": {"hiden_sizes": [4], "zzz": 1}}, "model")
    assert str(info.value) == (
        "unknown key(s) model.inner.hiden_sizes (did you mean 'hidden_sizes'?), model.inner.zzz; "
        "Inner takes: hidden_sizes, scale"
    )
    with pytest.raises(
        ConfigError, match=r"^unknown key\(s\) stpes \(did you mean 'steps'\?\); Outer takes: "
    ):
        Outer.from_dict({"name": "x", "stpes": 2})


def test_post_init_errors_come_back_with_the_config_path() -> None:
    with pytest.raises(ConfigError, match=r"^model\.inner: scale must be positive, got -1\.0$") as info:
        Outer.from_dict({"name": "x", "inner": {"scale": -1}}, "model")
    assert isinstance(info.value.__cause__, ValueError) and isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match=r"^Inner: scale must be positive, got 0\.0$"):
        Inner.from_dict({"scale": 0})  # no path: the class names it


def test_plain_dataclasses_and_class_variables() -> None:
    @dataclass
    class Plain:
        kind: ClassVar[str] = "plain"
        size: int = 1

    assert from_dict(Plain, {"size": 2}, "p") == Plain(2)
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) p\.kind; Plain takes: size$"):
        from_dict(Plain, {"kind": "x"}, "p")
    with pytest.raises(ConfigError, match="^Plain: expected a mapping, got str$"):
        from_dict(Plain, "size=2")


def test_a_family_of_configs_picks_its_class_from_the_data() -> None:
    @dataclass
    class Shape(StrictConfig):
        kind: str = "circle"

        @classmethod
        def config_class_for(cls, data: Any, where: str) -> type[StrictConfig]:
            return {"circle": Circle, "square": Square}[data.get("kind", "circle")]

    @dataclass
    class Circle(Shape):
        radius: float = 1.0

    @dataclass
    class Square(Shape):
        kind: str = "square"
        side: float = 1.0

    assert Shape.from_dict({"kind": "square", "side": 2}) == Square(side=2.0)
    assert Shape.from_dict({}) == Circle()
    with pytest.raises(ConfigError, match=r"^unknown key\(s\) shape\.side; Circle takes: kind, radius$"):
        Shape.from_dict({"side": 2}, "shape")


def test_did_you_mean() -> None:
    assert did_you_mean("gtzn", ["gtzan", "fma"]) == " (did you mean 'gtzan'?)"
    assert did_you_mean("xyz", ["gtzan", "fma"]) == ""
