"""Strict config loading: unknown keys, types, coercion, dotted overrides, beta schedules."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

import polydistill.agents
from polydistill.config import from_dict, load_yaml, override, parse_value, to_dict
from polydistill.distill.run import BetaSchedule
from polydistill.errors import ConfigError, PolydistillError
from polydistill.setups.generalist import GeneralistConfig


@dataclass(frozen=True)
class Inner:
    """A nested section."""

    lr: float = 1e-3
    steps: int = 10
    name: str = "a"
    flag: bool = False
    mode: Literal["x", "y"] = "x"
    widths: tuple[int, ...] = (4, 4)
    extra: dict[str, Any] = field(default_factory=dict)
    maybe: int | None = None


@dataclass(frozen=True)
class Outer:
    """A top-level config."""

    total: int = 100
    inner: Inner = field(default_factory=Inner)
    label: str | None = None
    items: tuple[Inner, ...] = ()


# --------------------------------------------------------------------------- from_dict
def test_from_dict_defaults_and_nesting():
    cfg = from_dict(Outer, {"inner": {"lr": 0.5, "widths": [1, 2, 3]}, "items": [{"steps": 3}, {}]})
    assert cfg.total == 100
    assert cfg.inner == Inner(lr=0.5, widths=(1, 2, 3))
    assert cfg.items == (Inner(steps=3), Inner())
    assert isinstance(cfg.inner.widths, tuple)
    assert from_dict(Outer, {}) == Outer()


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, {"totl": 5})
    msg = str(info.value)
    assert "totl" in msg
    for name in ("total", "inner", "label", "items"):
        assert name in msg


def test_nested_unknown_key_names_the_section():
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, {"inner": {"learning_rate": 1.0}})
    msg = str(info.value)
    assert "Outer.inner" in msg and "learning_rate" in msg
    for name in ("lr", "steps", "name", "flag", "mode", "widths", "extra", "maybe"):
        assert name in msg


@pytest.mark.parametrize("data", [
    {"total": "ten"},
    {"total": 2.5},
    {"total": "2.5"},
    {"total": True},
    {"total": None},
    {"total": [1]},
    {"label": 7},
    {"inner": 5},
    {"inner": {"lr": "fast"}},
    {"inner": {"lr": None}},
    {"inner": {"lr": False}},
    {"inner": {"name": 3}},
    {"inner": {"flag": "yes"}},
    {"inner": {"flag": 1}},
    {"inner": {"mode": "z"}},
    {"inner": {"widths": 4}},
    {"inner": {"widths": [4, "a"]}},
    {"inner": {"extra": [1, 2]}},
    {"inner": {"maybe": "x"}},
    {"items": {"steps": 1}},
    {"items": [{"bogus": 1}]},
])
def test_wrong_types_are_rejected(data):
    with pytest.raises(ConfigError):
        from_dict(Outer, data)


@pytest.mark.parametrize("value", ["1e5", 1e5, 100000, "100000", 100000.0, "1.0e5"])
def test_int_fields_coerce_scientific_notation(value):
    cfg = from_dict(Outer, {"total": value, "inner": {"maybe": value}})
    assert cfg.total == 100_000 and type(cfg.total) is int
    assert cfg.inner.maybe == 100_000 and type(cfg.inner.maybe) is int


@pytest.mark.parametrize(("value", "expected"), [("1e-3", 1e-3), (1, 1.0), ("2", 2.0), (0.25, 0.25)])
def test_float_fields_coerce_numbers(value, expected):
    cfg = from_dict(Inner, {"lr": value})
    assert cfg.lr == expected and type(cfg.lr) is float


def test_optional_fields_accept_none():
    cfg = from_dict(Outer, {"label": None, "inner": {"maybe": None}})
    assert cfg.label is None and cfg.inner.maybe is None


def test_missing_required_field_is_config_error():
    @dataclass(frozen=True)
    class Needs:
        """Has a required field."""

        x: int

    with pytest.raises(ConfigError, match="x"):
        from_dict(Needs, {})


def test_post_init_errors_propagate_as_config_error():
    with pytest.raises(ConfigError, match="BetaSchedule"):
        from_dict(GeneralistConfig, {"beta": {"start": 2.0}})
    with pytest.raises(ConfigError):
        from_dict(GeneralistConfig, {"rounds": 0})


def test_distill_config_strictness():
    with pytest.raises(ConfigError) as info:
        from_dict(GeneralistConfig, {"total_step": 10})
    msg = str(info.value)
    assert "total_step" in msg
    for f in dataclasses.fields(GeneralistConfig):
        assert f.name in msg
    cfg = from_dict(GeneralistConfig, {"total_steps": "1e5", "buffer": {"capacity": 2e4}})
    assert cfg.total_steps == 100_000 and type(cfg.total_steps) is int
    assert cfg.buffer.capacity == 20_000 and type(cfg.buffer.capacity) is int
    with pytest.raises(ConfigError):
        from_dict(GeneralistConfig, {"buffer": {"strategy": "lifo"}})
    with pytest.raises(ConfigError):
        from_dict(GeneralistConfig, {"student": {"hidden": "256"}})


def test_shipped_distill_recipe_loads():
    recipe = Path(polydistill.agents.__file__).parent / "distill.yaml"
    cfg = from_dict(GeneralistConfig, load_yaml(recipe))
    assert isinstance(cfg, GeneralistConfig)
    assert type(cfg.total_steps) is int and type(cfg.buffer.capacity) is int


def test_to_dict_round_trip():
    cfg = from_dict(Outer, {"total": 7, "inner": {"extra": {"a": [1, 2]}}, "items": [{"lr": 2.0}]})
    data = to_dict(cfg)
    assert data["inner"]["widths"] == [4, 4]
    assert data["items"] == [to_dict(Inner(lr=2.0))]
    assert from_dict(Outer, data) == cfg
    full = GeneralistConfig()
    assert from_dict(GeneralistConfig, to_dict(full)) == full
    with pytest.raises(ConfigError):
        to_dict({"not": "a dataclass"})


# --------------------------------------------------------------------------- override
def test_override_returns_new_config_and_leaves_original():
    cfg = from_dict(Outer, {"inner": {"extra": {"k": 1}}})
    snapshot = to_dict(cfg)
    new = override(cfg, ["inner.lr=3e-4", "total=1e5", "inner.widths=[8, 16]", "label=hello",
                         "inner.mode=y", "inner.flag=true"])
    assert new is not cfg
    assert new.inner.lr == pytest.approx(3e-4) and type(new.inner.lr) is float
    assert new.total == 100_000 and type(new.total) is int
    assert new.inner.widths == (8, 16)
    assert new.label == "hello"
    assert new.inner.mode == "y" and new.inner.flag is True
    assert new.inner.extra == {"k": 1}
    assert to_dict(cfg) == snapshot
    assert cfg == Outer(inner=Inner(extra={"k": 1}))
    # The new config does not share mutable state with the old one.
    new.inner.extra["k"] = 2
    assert cfg.inner.extra == {"k": 1}


def test_override_with_mapping():
    cfg = Outer()
    new = override(cfg, {"inner.steps": "2e3", "label": None})
    assert new.inner.steps == 2000 and new.label is None
    assert cfg.inner.steps == 10


def test_override_whole_section():
    new = override(Outer(), ["inner={lr: 0.5, steps: 3}"])
    assert new.inner == Inner(lr=0.5, steps=3)


def test_override_distill_config():
    cfg = GeneralistConfig()
    new = override(cfg, ["distiller.lr=3e-4", "rounds=5", "beta.kind=linear", "student.hidden=[64, 64]"])
    assert new.distiller.lr == pytest.approx(3e-4)
    assert new.rounds == 5
    assert new.beta.kind == "linear"
    assert new.student.hidden == (64, 64)
    assert cfg == GeneralistConfig()


def test_override_strips_whitespace_around_key():
    assert override(Outer(), [" total = 5 "]).total == 5


@pytest.mark.parametrize("assignment", [
    "total",             # no '='
    "",                  # empty
    "=5",                # empty key
    "nope=1",            # unknown key
    "inner.nope=1",      # unknown nested key
    "total.x=1",         # not a section
    "inner.lr.x=1",      # not a section
    "nope.lr=1",         # unknown section
    "total=ten",         # bad value type
    "inner.mode=z",      # bad literal
    "total==5",          # value '=5' is not an int
])
def test_bad_override_syntax(assignment):
    cfg = Outer()
    with pytest.raises(ConfigError):
        override(cfg, [assignment])
    assert cfg == Outer()


def test_override_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        override(Outer(), ["inner.rate=1"])
    msg = str(info.value)
    assert "rate" in msg
    for name in ("lr", "steps", "widths"):
        assert name in msg


@pytest.mark.parametrize(("text", "value"), [("1.0e+5", 1.0e5), ("true", True),
                                             ("[1, 2]", [1, 2]), ("null", None), ("abc", "abc"),
                                             ("{a: 1}", {"a": 1}), ("[unclosed", "[unclosed")])
def test_parse_value_uses_yaml_rules(text, value):
    assert parse_value(text) == value


# --------------------------------------------------------------------------- load_yaml
def test_load_yaml_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)
    good = tmp_path / "good.yaml"
    good.write_text("total: 1e5\ninner: {lr: 1.0e-3}\n")
    assert from_dict(Outer, load_yaml(good)).total == 100_000


# --------------------------------------------------------------------------- beta schedule
def test_beta_constant():
    s = BetaSchedule(kind="constant", start=0.7)
    assert [s.value(r) for r in range(5)] == [0.7] * 5


def test_beta_linear():
    s = BetaSchedule(kind="linear", start=1.0, end=0.0, rounds=4)
    assert [s.value(r) for r in range(7)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0])
    up = BetaSchedule(kind="linear", start=0.2, end=0.6, rounds=2)
    assert [up.value(r) for r in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.6])


def test_beta_exponential():
    s = BetaSchedule(kind="exponential", start=1.0, decay=0.5, end=0.1)
    assert [s.value(r) for r in range(6)] == pytest.approx([1.0, 0.5, 0.25, 0.125, 0.1, 0.1])
    floor0 = BetaSchedule(kind="exponential", start=0.8, decay=0.5, end=0.0)
    vals = [floor0.value(r) for r in range(30)]
    assert vals[0] == pytest.approx(0.8)
    assert all(b < a for a, b in zip(vals, vals[1:], strict=False))
    assert all(0.0 <= v <= 1.0 for v in vals)


@pytest.mark.parametrize("kind", ["constant", "linear", "exponential"])
def test_beta_values_stay_in_unit_interval(kind):
    s = BetaSchedule(kind=kind, start=0.9, end=0.1, decay=0.7, rounds=3)
    assert all(0.0 <= s.value(r) <= 1.0 for r in range(50))


@pytest.mark.parametrize("kwargs", [
    {"start": 1.5}, {"start": -0.1}, {"end": 2.0}, {"end": -1.0}, {"decay": 1.01},
    {"decay": -0.5}, {"start": float("nan")}, {"rounds": 0}, {"kind": "cosine"},
])
def test_beta_rejects_out_of_range(kwargs):
    with pytest.raises(ConfigError):
        BetaSchedule(**kwargs)
    with pytest.raises(PolydistillError):
        from_dict(BetaSchedule, kwargs)


def test_exponent_numbers_without_a_dot_are_numbers_in_recipes_and_overrides(tmp_path) -> None:  # noqa: ANN001
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; it must reach SB3 and configs as a float."""
    from polydistill.config import load_yaml, parse_assignments
    from polydistill.teachers.train import load_recipe

    assert parse_assignments(["hyperparams.learning_rate=1e-4", "n=3e5", "name=e5", "x=1.5E-3"]) == {
        "hyperparams.learning_rate": 1e-4, "n": 3e5, "name": "e5", "x": 1.5e-3}
    path = tmp_path / "r.yaml"
    path.write_text("default: {n_timesteps: 2e5, hyperparams: {learning_rate: 3e-4, n_steps: 64}}\n")
    assert load_yaml(path)["default"]["hyperparams"]["learning_rate"] == 3e-4
    recipe = load_recipe("Pendulum-v1", path, {"hyperparams.ent_coef": 1e-3})
    assert recipe.n_timesteps == 200_000 and recipe.hyperparams == {
        "learning_rate": 3e-4, "n_steps": 64, "ent_coef": 1e-3}
