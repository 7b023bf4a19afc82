"""Recipe schema: built-in recipes parse, overrides apply, malformed recipes give ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchshrink.core.errors import ConfigError
from torchshrink.pipeline.recipe import (
    STAGE_KINDS,
    Recipe,
    builtin_recipes,
    load_recipe,
    recipe_from_dict,
)

BUILTINS = [
    "deep-compression",
    "int8-ptq",
    "int4-weight-only",
    "structured-50",
    "prune-distill-quantize",
    "demo",
]


def _base() -> dict:
    return {
        "model": "zoo:lenet300",
        "model_args": {"input_size": 8},
        "data": "digits",
        "stages": [
            {"kind": "prune", "config": {"ratio": 0.5, "granularity": "channel"}},
            {"kind": "quantize", "config": {"scheme": "w8"}},
        ],
    }


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_recipe_parses(name: str) -> None:
    r = load_recipe(name)
    assert isinstance(r, Recipe)
    assert r.name == name
    assert len(r.stages) >= 1
    assert all(s.kind in STAGE_KINDS for s in r.stages)


def test_builtin_names_listed() -> None:
    assert sorted(BUILTINS) == builtin_recipes()


def test_overrides_reach_nested_fields() -> None:
    r = load_recipe(
        "deep-compression",
        overrides=["train.epochs=1", "stages.0.config.ratio=0.3", "stages.1.bits=4"],
    )
    assert r.train is not None and r.train.epochs == 1
    assert r.stages[0].config.ratio == pytest.approx(0.3)
    assert r.stages[1].bits == 4


def test_recipe_file_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(_base()))
    r = load_recipe(p)
    assert [s.kind for s in r.stages] == ["prune", "quantize"]
    assert r.stages[1].config.mode == "weight_only"


def test_unknown_key_names_file_stage_and_field(tmp_path: Path) -> None:
    raw = _base()
    raw["stages"][1]["config"]["colour"] = "red"
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(raw))
    with pytest.raises(
        ConfigError, match=r"bad\.yaml.*stage 1 \(quantize\).*config\.colour.*unknown"
    ):
        load_recipe(p)


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"field 'epochs'.*unknown"):
        recipe_from_dict({**_base(), "epochs": 3})


def test_wrong_stage_kind_lists_valid_kinds() -> None:
    raw = _base()
    raw["stages"][0]["kind"] = "shrink"
    with pytest.raises(
        ConfigError, match=r"stage 0: field 'kind': expected one of prune.*'shrink'"
    ):
        recipe_from_dict(raw)


def test_missing_kind() -> None:
    raw = _base()
    del raw["stages"][1]["kind"]
    with pytest.raises(ConfigError, match=r"stage 1: field 'kind': missing"):
        recipe_from_dict(raw)


def test_bad_value_says_what_was_expected() -> None:
    with pytest.raises(ConfigError, match=r"stage 0 \(prune\).*config\.ratio.*number.*'lots'"):
        load_recipe("structured-50", overrides=["stages.0.config.ratio=lots"])


def test_not_yaml_and_not_mapping(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("stages: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*not valid YAML"):
        load_recipe(p)
    p.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml.*expected a mapping"):
        load_recipe(p)


def test_unknown_recipe_name_lists_builtins() -> None:
    with pytest.raises(ConfigError, match=r"no-such-recipe.*int8-ptq"):
        load_recipe("no-such-recipe")


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match=r"override 'train\.epochs'.*key=value"):
        load_recipe("int8-ptq", overrides=["train.epochs"])
    with pytest.raises(ConfigError, match=r"'7' is not an index below 2"):
        load_recipe("int8-ptq", overrides=["stages.7.kind=prune"])


# Values that are wrong for every field they are put into below (wrong type or out of range).
_BAD = st.one_of(
    st.text(min_size=1, max_size=8).filter(lambda s: not s.strip().lstrip("-").isdigit()),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), min_size=1, max_size=2),
    st.floats(max_value=-0.01, allow_nan=False),
)
_FIELDS = [
    (0, ("config", "ratio")),  # prune ratio: a float in [0, 1]
    (0, ("config", "steps")),  # int >= 1
    (1, ("config", "calibration_size")),  # int >= 1
    (1, ("config", "batch_size")),
]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(field=st.sampled_from(_FIELDS), value=_BAD)
def test_hypothesis_bad_values_always_config_error(field: tuple, value: object) -> None:
    index, path = field
    raw = _base()
    node = raw["stages"][index]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        recipe_from_dict(raw, source="hyp.yaml")
    msg = str(info.value)
    assert "hyp.yaml" in msg
    assert f"stage {index}" in msg
    assert path[-1] in msg


@settings(max_examples=30, deadline=None)
@given(
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=2, max_size=10),
    where=st.sampled_from(["top", "stage", "config"]),
    kind=st.text(min_size=1, max_size=10),
)
def test_hypothesis_unknown_keys_and_kinds_always_config_error(
    key: str, where: str, kind: str
) -> None:
    raw = _base()
    if where == "top" and key not in Recipe.model_fields:
        raw[key] = 1
    elif where == "stage" and key not in ("kind", "name", "config"):
        raw["stages"][0][key] = 1
    else:
        raw["stages"][0]["kind"] = kind if kind not in STAGE_KINDS else kind + "x"
    with pytest.raises(ConfigError, match=r"recipe '<dict>': "):
        recipe_from_dict(raw)
