"""The one config mechanism (epg.configs): plain dicts out, checked configs back in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from epg.config import EPGConfig, ModelConfig, PairConfig
from epg.configs import Config, fail, field_default, from_dict, to_plain


class SampleError(ValueError):
    pass


@dataclass(frozen=True)
class Inner(Config):
    k: int = 4
    rate: float = 0.5


@dataclass(frozen=True)
class Outer(Config):
    config_error = SampleError

    name: str
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = (1, 2)
    pair: tuple[int, int] = (3, 4)
    views: dict[str, tuple[str, ...]] = field(default_factory=dict)
    mode: Literal["a", "b"] = "a"
    limit: int | None = None
    where: Path = Path("out")
    flag: bool = False

    def __post_init__(self) -> None:
        if self.inner.k > 100:
            fail(self, "inner.k", "<= 100", self.inner.k)


def test_round_trip_through_plain_json_types():
    config = Outer("x", Inner(k=7, rate=1.5), sizes=(5,), pair=(1, 2), views={"v": ("s1", "s2")}, mode="b",
                   limit=3, where=Path("/tmp/o"), flag=True)
    plain = config.to_dict()
    assert plain == {"name": "x", "inner": {"k": 7, "rate": 1.5}, "sizes": [5], "pair": [1, 2],
                     "views": {"v": ["s1", "s2"]}, "mode": "b", "limit": 3, "where": "/tmp/o", "flag": True}
    assert Outer.from_dict(plain) == config
    assert Outer.from_dict({"name": "y"}) == Outer("y")  # missing fields take their defaults


@pytest.mark.parametrize(
    "data, message",
    [
        ({"name": "x", "colour": 1}, r"Outer: unknown field\(s\) \['colour'\]; known: \["),
        ({"name": "x", "inner": {"kk": 1}}, r"Outer\.inner: unknown field\(s\) \['kk'\]"),
        ({"name": "x", "inner": {"k": "3"}}, r"Outer\.inner\.k must be int, got '3'"),
        ({"name": "x", "inner": {"k": True}}, r"Outer\.inner\.k must be int, got True"),
        ({"name": "x", "inner": {"rate": "fast"}}, r"Outer\.inner\.rate must be float"),
        ({"name": 5}, r"Outer\.name must be str, got 5"),
        ({"name": "x", "sizes": [1, "2"]}, r"Outer\.sizes\[1\] must be int"),
        ({"name": "x", "pair": [1, 2, 3]}, r"Outer\.pair must have 2 values"),
        ({"name": "x", "mode": "c"}, r"Outer\.mode must be one of \('a', 'b'\), got 'c'"),
        ({"name": "x", "limit": 2.5}, r"Outer\.limit must be"),
        ({"name": "x", "views": {"v": "s1"}}, r"Outer\.views\['v'\] must be"),
        ({"name": "x", "inner": [1]}, r"Outer\.inner must be Inner"),
        ([1, 2], r"Outer must be a mapping"),
    ],
)
def test_loading_names_the_field_and_raises_the_class_error(data, message):
    with pytest.raises(SampleError, match=message):
        Outer.from_dict(data)


def test_value_rules_still_run_on_load_and_ints_read_as_floats():
    with pytest.raises(SampleError, match=r"Outer\.inner\.k must be <= 100, got 101"):
        Outer.from_dict({"name": "x", "inner": {"k": 101}})
    loaded = Outer.from_dict({"name": "x", "inner": {"rate": 2}})
    assert loaded.inner.rate == 2.0 and isinstance(loaded.inner.rate, float)


def test_defaults_come_from_the_dataclass():
    assert Outer.default_of("sizes") == (1, 2) and Outer.default_of("inner") == Inner()
    assert field_default(PairConfig, "k") == PairConfig().k
    with pytest.raises(KeyError, match="no default"):
        Outer.default_of("name")
    with pytest.raises(KeyError, match="no field"):
        Outer.default_of("nosuch")


def test_the_library_configs_use_it():
    config = EPGConfig(model=ModelConfig.tiny(), pairs=PairConfig(mining="topk", k=2, cap=None))
    assert to_plain(config) == config.to_dict()
    assert from_dict(EPGConfig, config.to_dict()) == config
    with pytest.raises(ValueError, match=r"EPGConfig\.model\.visual\.mean\[0\] must be float"):
        EPGConfig.from_dict({"model": {"visual": {"mean": ["a", 0.4, 0.4]}}})
