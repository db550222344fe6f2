"""spec/values.py: the one set of value rules the trigger-time plugin, ``mlpipe trigger`` and the tasks apply."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_mlpipe.spec import values
from airflow_mlpipe.spec.values import (
    MAX_SAFE_INTEGER,
    conf_problems,
    parse_int,
    parse_number,
    registered_refs,
    value_problem,
    workspace_key,
)

# the shape of GET /dags/{id}/details "params" (and of the plugin's view of a serialized DAG)
DECLARED = {
    "data": {"value": "income_raw:latest", "schema": {"mlpipe_type": "dataset", "type": "string"}},
    "where": {"value": "in/x.csv", "schema": {"mlpipe_type": "path", "type": "string"}},
    "label": {"value": "run", "schema": {"mlpipe_type": "string", "type": "string"}},
    "notes": {"value": "", "schema": {"type": "string", "format": "multiline"}},  # hand-written: a text area
    "seed": {"value": 7, "schema": {"type": "integer"}},  # hand-written: no mlpipe_type, typed by "type"
    "rate": {"value": 0.5, "schema": {"mlpipe_type": "number", "type": "number"}},
    "limit": {"value": None, "schema": {"type": ["null", "integer"]}},
    "free": {"value": None, "schema": {}},
}


@pytest.mark.parametrize(
    "text, expected",
    [("42", 42), ("-7", -7), ("+3", 3), (" 12 ", 12), ("0", 0), ("9" * 30, int("9" * 30))],
)
def test_parse_int_takes_ascii_digits(text, expected):
    assert parse_int(text) == expected


@pytest.mark.parametrize("text", ["1_0", "\u0661\u0662", "\uff11", "1.0", "0x10", "", " ", "1e3", "--1"])
def test_parse_int_refuses_what_int_would_take(text):
    with pytest.raises(ValueError):
        parse_int(text)


@pytest.mark.parametrize("text, expected", [("0.5", 0.5), ("1", 1), ("1e-3", 0.001), (".5", 0.5), ("-2.", -2.0)])
def test_parse_number(text, expected):
    value = parse_number(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("text", ["1_0.5", "\u0661.\u0665", "nan", "inf", "-Infinity", "1e999", "0x1p3"])
def test_parse_number_refuses_what_float_would_take(text):
    with pytest.raises(ValueError):
        parse_number(text)


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("seed", 10**30, "out of range: integers must be within -9007199254740991..9007199254740991"),
        ("seed", -(2**53), "out of range"),
        ("rate", float("nan"), "is not a finite number"),
        ("rate", float("inf"), "is not a finite number"),
        ("label", "hello\n", "ends with a newline"),
        ("label", "a\tb", "control character '\\t' at position 1"),
        ("label", "a\x85b", "control character"),  # C1 (NEL)
        ("label", "x" * 16385, "longer than 16384 characters"),
        ("data", "models:/m/1", "is a model reference, but this param takes a dataset"),
        ("data", "s3://bucket/x", "is a URI"),
        ("data", "file:///etc", "is a URI"),
        ("data", "/abs/dir", "is absolute"),
        ("data", "d" * 201, "longer than 200 characters"),
        ("data", "name:v2", "invalid dataset reference"),
        ("data", "name:0", "versions start at 1"),
        ("data", "name:" + "9" * 20, "out of range"),
        ("data", "name\n", "ends with a newline"),
        ("data", "a/../../b", "'..' segment"),
        ("data", 3, "expected a string"),
        ("where", "s3://bucket/x", "is a URI"),
        ("where", "/etc/passwd", "is absolute"),
        ("where", "\\\\server\\share", "is absolute"),
        ("where", "C:\\x", "is absolute"),
        ("where", "~/x", "starts with '~'"),
        ("where", "a/../b", "'..' segment"),
        ("where", "a\\..\\b", "'..' segment"),
        ("where", "", "cannot be empty"),
        ("where", "a/" + "x" * 256, "longer than 255 bytes"),
        ("where", "\u00e9" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ("where", "/".join(["x" * 200] * 6), "longer than 1024 bytes"),
        ("where", "in/x.csv\n", "ends with a newline"),
    ],
)
def test_value_problems(name, value, fragment):
    problem = value_problem(name, value, DECLARED[name]["schema"])
    assert problem is not None and problem.startswith(f"param {name!r}: "), problem
    assert fragment in problem, problem


@pytest.mark.parametrize(
    "name, value",
    [
        ("seed", MAX_SAFE_INTEGER), ("seed", -MAX_SAFE_INTEGER), ("rate", 1e300), ("rate", 10**30),
        ("label", "ok \u00e9 \u4e2d"), ("label", "x" * 16384), ("notes", "line 1\nline 2"),
        ("data", "income_raw"), ("data", "income_raw:3"), ("data", "income_raw:latest"), ("data", "d" * 200),
        ("data", "in/table"), ("where", "in/x.csv"), ("where", "./in//x.csv"), ("where", "..x/y"),
        ("where", "a:3/b"), ("limit", None), ("free", "any\nthing"), ("free", 10**40),
    ],
)
def test_values_that_pass(name, value):
    assert value_problem(name, value, DECLARED[name]["schema"]) is None


def test_workspace_key_normalises():
    assert workspace_key("./in//x.csv") == "in/x.csv"
    assert workspace_key("in\\sub\\x.csv") == "in/sub/x.csv"
    for bad in ("/etc", "s3://b/k", ".", "./", 5):
        with pytest.raises(ValueError):
            workspace_key(bad)


def test_conf_problems_names_unknown_keys_with_a_hint_and_the_declared_params():
    problems = conf_problems("p", DECLARED, {"seeds": 1, "label": "ok", "regenerate_outputs": True, "zzz": 2})
    declared = "declared params: data, free, label, limit, notes, rate, regenerate_outputs, seed, where"
    assert problems == [f"p has no param 'seeds' (did you mean 'seed'?); {declared}",
                        f"p has no param 'zzz'; {declared}"]


def test_conf_problems_lists_every_problem_and_can_leave_unknown_keys_alone():
    conf = {"nope": 1, "seed": 10**20, "where": "/etc"}
    assert len(conf_problems("p", DECLARED, conf)) == 3
    assert [p.split(":")[0] for p in conf_problems("p", DECLARED, conf, unknown_keys=False)] == [
        "param 'seed'", "param 'where'"]
    assert conf_problems("p", DECLARED, {"seed": 3, "data": "x:2"}) == []


def test_registered_refs_are_the_dataset_values_of_this_run():
    assert registered_refs(DECLARED, {}) == [("data", "income_raw:latest")]  # the default
    assert registered_refs(DECLARED, {"data": "other:2"}) == [("data", "other:2")]
    assert registered_refs(DECLARED, {"data": "in/table"}) == []  # a workspace path, not the registry
    assert registered_refs(DECLARED, {"data": "models:/m/1"}) == []  # refused by value_problem instead
    assert registered_refs(DECLARED, {"data": None}) == []


def test_module_is_light():
    """The API server plugin and the CLI import it: no pydantic, no Airflow, no spec models."""
    probe = ("import sys, airflow_mlpipe.spec.values as v; v.dataset_problem('x:1'); "
             "print(sorted(m for m in ('pydantic', 'airflow', 'airflow_mlpipe.spec.params', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert values.KIND_KEY == "mlpipe_type"


@pytest.mark.parametrize(
    "name, value, fragment",
    [("seed", 1.5, "expected an integer"), ("seed", True, "expected an integer"), ("rate", "0.5", "expected a number"),
     ("label", 3, "expected a string"), ("where", ["a"], "expected a string")],
)
def test_values_of_the_wrong_json_type(name, value, fragment):
    assert fragment in value_problem(name, value, DECLARED[name]["schema"])
    assert value_problem("flag", "yes", {"type": "boolean"}) == "param 'flag': expected true or false, got 'yes'"
