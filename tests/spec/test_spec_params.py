"""Params: declaration checks, value checks, and the JSON Schema given to Airflow's Param."""

from __future__ import annotations

import jsonschema
import pytest

from airflow_mlpipe.spec import ParamSpec, param_json_schema


def _schema_accepts(param: ParamSpec, value) -> bool:
    try:
        jsonschema.validate(value, param_json_schema(param))
    except jsonschema.ValidationError:
        return False
    return True


def test_numeric_schema():
    p = ParamSpec(type="number", default=0.5, exclusive_minimum=0, maximum=10, description="lr")
    assert param_json_schema(p) == {"type": "number", "exclusiveMinimum": 0, "maximum": 10}
    assert p.description == "lr"
    assert p.declaration_problems() == []


def test_string_schema():
    p = ParamSpec(type="string", default="abc", min_length=1, max_length=5, pattern="^[a-z]+$")
    assert param_json_schema(p) == {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"}
    assert p.value_problems("ABC") == ["does not match pattern '^[a-z]+$'"]


def test_enum_schema():
    p = ParamSpec(type="enum", values=["fast", "full"], default="fast")
    assert param_json_schema(p) == {"enum": ["fast", "full"], "type": "string"}
    assert p.value_problems("slow")


@pytest.mark.parametrize(
    "value, ok",
    [("income", True), ("income:3", True), ("income:latest", True), ("income:v3", False), ("", False)],
)
def test_dataset_schema(value, ok):
    p = ParamSpec(type="dataset")
    assert _schema_accepts(p, value) is ok
    assert (p.value_problems(value) == []) is ok


@pytest.mark.parametrize(
    "value, ok",
    [
        ("data/in.csv", True),
        ("a/b/c", True),
        ("..foo/x", True),
        ("/etc/passwd", False),
        ("../x", False),
        ("a/../b", False),
        ("a/..", False),
    ],
)
def test_path_schema(value, ok):
    p = ParamSpec(type="path")
    assert _schema_accepts(p, value) is ok
    assert (p.value_problems(value) == []) is ok


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"type": "integer", "default": 5, "maximum": 3}, "default"),
        ({"type": "integer", "default": 1.5}, "default"),
        ({"type": "integer", "default": True}, "default"),
        ({"type": "boolean", "default": "yes"}, "default"),
        ({"type": "number", "minimum": 5, "maximum": 1}, "maximum"),
        ({"type": "string", "min_length": 5, "max_length": 1}, "max_length"),
        ({"type": "string", "pattern": "("}, "pattern"),
        ({"type": "enum"}, "type"),
        ({"type": "enum", "values": [1, 1]}, "values"),
        ({"type": "integer", "values": [1, 2]}, "values"),
        ({"type": "boolean", "pattern": "x"}, "pattern"),
    ],
)
def test_declaration_problems(kwargs, field):
    problems = ParamSpec(**kwargs).declaration_problems()
    assert problems and problems[0][0] == field


def test_schema_matches_value_checks_for_bounds():
    p = ParamSpec(type="integer", minimum=1, maximum=10)
    for value in (0, 1, 10, 11):
        assert _schema_accepts(p, value) is (p.value_problems(value) == [])
