"""Typing ``--param NAME=VALUE`` by a DAG's declared params (pure functions of cli/params.py)."""

from __future__ import annotations

import pytest

from airflow_mlpipe.cli.params import ConfRefused, build_conf, coerce_param, declared_params

# The shape of GET /api/v2/dags/{dag_id}/details "params" for the quickstart (Param.dump()).
DETAILS = {
    "params": {
        "rows": {"value": 2000, "schema": {"type": "integer", "minimum": 100, "title": "rows"},
                 "description": "Number of rows.", "source": None},
        "learning_rate": {"value": 0.5, "schema": {"type": "number", "exclusiveMinimum": 0}, "description": None},
        "regenerate_outputs": {"value": False, "schema": {"type": "boolean"}, "description": "Recompute."},
        "mode": {"value": "fast", "schema": {"enum": ["fast", "full"], "type": "string"}, "description": None},
        "level": {"value": 1, "schema": {"enum": [1, 2, 3]}, "description": None},
        "data": {"value": "income_raw:latest", "schema": {"type": "string", "pattern": ".+"}, "description": None},
        "limit": {"value": None, "schema": {"type": ["null", "integer"]}, "description": None},
        "grid": {"value": [1], "schema": {"type": "array"}, "description": None},
        "free": {"value": None, "schema": {}, "description": None},
        "legacy": 5,
    }
}
DECLARED = declared_params(DETAILS)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("rows", "500", 500),
        ("rows", " 7 ", 7),
        ("learning_rate", "0.25", 0.25),
        ("learning_rate", "1", 1),
        ("learning_rate", "1e-3", 0.001),
        ("regenerate_outputs", "true", True),
        ("regenerate_outputs", "No", False),
        ("regenerate_outputs", "1", True),
        ("mode", "full", "full"),
        ("level", "2", 2),
        ("data", "income_raw:3", "income_raw:3"),
        ("data", "123", "123"),  # a string param keeps the text, even if it looks like a number
        ("limit", "null", None),
        ("limit", "12", 12),
        ("grid", "[1, 2, 3]", [1, 2, 3]),
        ("free", '{"a": 1}', {"a": 1}),
        ("free", "plain text", "plain text"),
        ("legacy", "6", 6),
    ],
)
def test_values_are_typed_by_the_schema(name, raw, expected):
    value = coerce_param(name, raw, DECLARED[name])
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("rows", "notanint", "param 'rows' is an integer: cannot use 'notanint' (e.g. --param rows=2000)"),
        ("rows", "5.5", "is an integer"),
        ("learning_rate", "fast", "is a number"),
        ("learning_rate", "nan", "is a number"),
        ("regenerate_outputs", "maybe", "is a boolean (true/false)"),
        ("mode", "fulll", "must be one of fast, full; got 'fulll' (did you mean 'full'?)"),
        ("level", "4", "must be one of 1, 2, 3"),
        ("grid", "{}", "is a JSON array"),
    ],
)
def test_untypable_values_are_refused(name, raw, message):
    with pytest.raises(ConfRefused) as info:
        coerce_param(name, raw, DECLARED[name])
    assert message in str(info.value)


def test_build_conf_merges_conf_json_then_params():
    conf = build_conf(DECLARED, ["rows=500", "mode=full"], '{"rows": 100, "learning_rate": 0.1}')
    assert conf == {"rows": 500, "learning_rate": 0.1, "mode": "full"}


def test_unknown_param_is_refused_with_did_you_mean_and_the_declared_list():
    with pytest.raises(ConfRefused) as info:
        build_conf(DECLARED, ["row=500"], dag_id="mlpipe_quickstart")
    text = str(info.value)
    assert "mlpipe_quickstart has no param 'row' (did you mean 'rows'?)" in text
    assert "declared params: data, free, grid, learning_rate, legacy, level, limit, mode, regenerate_outputs, rows" in text
    with pytest.raises(ConfRefused, match="has no param 'nope'"):
        build_conf(DECLARED, [], '{"nope": 1}')


@pytest.mark.parametrize(
    ("pairs", "conf_json", "message"),
    [
        (["rows"], None, "--param 'rows': expected NAME=VALUE"),
        (["=5"], None, "expected NAME=VALUE"),
        ([], "{not json", "--conf-json is not valid JSON"),
        ([], "[1, 2]", "--conf-json must be a JSON object, got list"),
    ],
)
def test_malformed_items(pairs, conf_json, message):
    with pytest.raises(ConfRefused, match=message.replace("[", r"\[").replace("{", r"\{")):
        build_conf(DECLARED, pairs, conf_json)


def test_version_sets_pipeline_version_only_on_endpoints():
    endpoint = declared_params({"params": {"pipeline_version": {"value": None, "schema": {"type": ["null", "integer"]}}}})
    assert build_conf(endpoint, [], None, version=3) == {"pipeline_version": 3}
    with pytest.raises(ConfRefused, match="not a pipeline endpoint"):
        build_conf(DECLARED, [], None, version=3, dag_id="mlpipe_quickstart")


def test_value_with_equals_sign_keeps_the_rest():
    assert build_conf(DECLARED, ["data=a=b/c"]) == {"data": "a=b/c"}


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("rows", "1_0", "param 'rows' is an integer: cannot use '1_0'"),  # int() would give 10
        ("rows", "\u0661\u0662", "param 'rows' is an integer: cannot use"),  # int() would give 12
        ("learning_rate", "0_5", "is a number"),
        ("learning_rate", "\u0660.\u0665", "is a number"),  # float() would give 0.5
        ("learning_rate", "inf", "is a number"),
    ],
)
def test_numbers_are_parsed_strictly(name, raw, message):
    with pytest.raises(ConfRefused) as info:
        coerce_param(name, raw, DECLARED[name])
    assert message in str(info.value)


TYPED = declared_params({"params": {  # as the factory declares them (spec/params.py param_json_schema)
    "data": {"value": "raw:latest", "schema": {"mlpipe_type": "dataset", "type": "string"}},
    "where": {"value": "in/x.csv", "schema": {"mlpipe_type": "path", "type": "string"}},
    "label": {"value": "x", "schema": {"mlpipe_type": "string", "type": "string"}},
    "seed": {"value": 7, "schema": {"mlpipe_type": "integer", "type": "integer"}},
}})


@pytest.mark.parametrize(
    ("pairs", "conf_json", "message"),
    [
        (["label=hello\n"], None, "param 'label': 'hello\\n' ends with a newline"),
        (["seed=" + "9" * 30], None, "param 'seed': 999999999999999999999999999999 is out of range"),
        ([], '{"seed": 1e400}', "param 'seed': expected an integer, got inf"),
        ([], '{"label": 12}', "param 'label': expected a string, got 12"),
        (["data=models:/m/1"], None, "param 'data': 'models:/m/1' is a model reference"),
        (["where=s3://b/x"], None, "param 'where': 's3://b/x' is a URI"),
        ([], '{"where": "/etc/passwd"}', "param 'where': '/etc/passwd' is absolute"),
        (["where=/etc", "seed=" + "1" * 20], None, "data/income.csv; param 'seed'"),  # every problem at once
    ],
)
def test_values_the_rules_refuse_are_not_sent(pairs, conf_json, message):
    with pytest.raises(ConfRefused) as info:
        build_conf(TYPED, pairs, conf_json, dag_id="p")
    assert message in str(info.value)
