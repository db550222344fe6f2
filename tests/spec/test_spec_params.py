"""Params: declaration checks, value checks, and the JSON Schema given to Airflow's Param."""

from __future__ import annotations

import jsonschema
import pytest

from airflow_mlpipe.spec import ParamSpec, param_json_schema
from airflow_mlpipe.spec.values import CONTROL_PATTERN, MAX_SAFE_INTEGER, MAX_STRING_LENGTH


def _schema_accepts(param: ParamSpec, value) -> bool:
    try:
        jsonschema.validate(value, param_json_schema(param))
    except jsonschema.ValidationError:
        return False
    return True


def test_numeric_schema():
    p = ParamSpec(type="number", default=0.5, exclusive_minimum=0, maximum=10, description="lr")
    assert param_json_schema(p) == {"mlpipe_type": "number", "type": "number", "exclusiveMinimum": 0, "maximum": 10}
    assert p.description == "lr"
    assert p.declaration_problems() == []


def test_string_schema():
    p = ParamSpec(type="string", default="abc", min_length=1, max_length=5, pattern="^[a-z]+$")
    assert param_json_schema(p) == {"mlpipe_type": "string", "type": "string", "not": {"type": "string", "pattern": CONTROL_PATTERN},
                                    "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"}
    assert p.value_problems("ABC") == ["does not match pattern '^[a-z]+$'"]


def test_enum_schema():
    p = ParamSpec(type="enum", values=["fast", "full"], default="fast")
    assert param_json_schema(p) == {"mlpipe_type": "enum", "enum": ["fast", "full"], "type": "string"}
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


# -- the schema says what spec/values.py says, so Airflow's own validation refuses the same values

@pytest.mark.parametrize(
    "ptype, value",
    [
        ("dataset", "models:/m/1"),  # a model where a dataset is expected
        ("dataset", "s3://bucket/x"),
        ("dataset", "income\n"),  # "$" alone would let a trailing newline through
        ("dataset", "d" * 201),
        ("path", "s3://bucket/x"),
        ("path", "file:///etc"),
        ("path", "~/x"),
        ("path", "C:/x"),
        ("path", "data/x.csv\n"),
        ("string", "hello\n"),
        ("string", "a\x1bb"),
        ("string", "x" * (MAX_STRING_LENGTH + 1)),
        ("integer", MAX_SAFE_INTEGER + 1),
        ("integer", -(10**30)),
    ],
)
def test_schema_refuses_what_the_value_rules_refuse(ptype, value):
    p = ParamSpec(type=ptype)
    assert p.value_problems(value), value
    assert not _schema_accepts(p, value), value


def test_integer_bounds_keep_the_authors_and_never_exceed_53_bits():
    assert param_json_schema(ParamSpec(type="integer", minimum=1, maximum=10**30)) == {
        "mlpipe_type": "integer", "type": "integer", "minimum": 1, "maximum": MAX_SAFE_INTEGER}
    p = ParamSpec(type="integer", default=2**53)
    assert p.declaration_problems() and p.declaration_problems()[0][0] == "default"


@pytest.mark.parametrize(
    "kwargs, value",
    [
        ({"type": "boolean"}, False),
        ({"type": "string"}, "ok"),
        ({"type": "integer"}, 3),
        ({"type": "number"}, 0.5),
        ({"type": "enum", "values": ["a", "b"]}, "a"),
        ({"type": "dataset"}, "raw:latest"),
        ({"type": "path"}, "in/x.csv"),
    ],
)
def test_schema_accepts_good_values_and_null_where_null_is_allowed(kwargs, value):
    p = ParamSpec(**kwargs)
    assert _schema_accepts(p, value)
    schema = param_json_schema(p)
    if "type" in schema:  # the endpoint DAG makes each param nullable (factory/endpoints.py)
        nullable = {**schema, "type": [schema["type"], "null"]}
        if "enum" in nullable:
            nullable["enum"] = [*nullable["enum"], None]
        jsonschema.validate(None, nullable)
        jsonschema.validate(value, nullable)
