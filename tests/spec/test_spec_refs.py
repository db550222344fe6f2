"""The reference syntax: parsing, find_refs, substitute (no re-expansion, $${ escape, partial)."""

from __future__ import annotations

import pytest

from airflow_mlpipe.spec import (
    InputRef,
    Ref,
    RefError,
    escape,
    find_refs,
    parse_input,
    parse_template,
    substitute,
)


def test_parse_template_splits_literals_and_refs():
    parts = parse_template("--lr=${params.learning_rate} in ${inputs.data}")
    assert parts[0] == "--lr="
    assert isinstance(parts[1], Ref) and parts[1].expr == "params.learning_rate"
    assert parts[2] == " in "
    assert parts[3].kind == "inputs" and parts[3].name == "data"


@pytest.mark.parametrize(
    "text, exprs",
    [
        ("plain", []),
        ("${params.a}${outputs.b}", ["params.a", "outputs.b"]),
        ("${run.id}/${run.pipeline}/${run.step}", ["run.id", "run.pipeline", "run.step"]),
        ("${steps.prep.outputs.table}", ["steps.prep.outputs.table"]),
        ("$${params.a}", []),  # escaped: a literal
        ("cost: $5 and $${x} and ${ params.a }", ["params.a"]),
    ],
)
def test_find_refs(text, exprs):
    assert [r.expr for r in find_refs(text)] == exprs


@pytest.mark.parametrize(
    "text", ["${params.a", "${foo.bar}", "${run.date}", "${params}", "${params.a.b}", "${}"]
)
def test_invalid_references(text):
    with pytest.raises(RefError):
        find_refs(text)


def test_substitute_with_mapping_and_callable():
    assert substitute("--rows=${params.rows}", {"params.rows": 5}) == "--rows=5"
    assert substitute("${params.flag}", {"params.flag": True}) == "true"
    assert (
        substitute("${run.id}-${run.step}", lambda ref: {"id": "r1", "step": "train"}[ref.name]) == "r1-train"
    )


def test_substitute_does_not_reexpand_values():
    values = {"params.name": "${params.secret}", "params.secret": "leak"}
    assert substitute("hello ${params.name}", values) == "hello ${params.secret}"
    assert substitute("${params.name}", values) != "leak"


def test_escape_gives_a_literal():
    assert substitute("$${params.rows} is ${params.rows}", {"params.rows": 3}) == "${params.rows} is 3"
    assert substitute("no refs $${x}", {}) == "no refs ${x}"
    assert substitute("price: $5", {}) == "price: $5"


def test_unresolved_reference_is_an_error():
    with pytest.raises(RefError, match="cannot resolve"):
        substitute("${params.missing}", {})


def test_partial_substitution_keeps_a_template_for_the_runtime():
    """The operator substitutes params; the runtime later resolves inputs/outputs. Values and
    escaped literals must survive the second pass unchanged."""
    first = substitute(
        "$${lit} ${params.p} ${inputs.data}",
        {"params.p": "${outputs.model}"},
        partial=True,
    )
    assert first == "$${lit} $${outputs.model} ${inputs.data}"
    second = substitute(first, {"inputs.data": "/tmp/in"})
    assert second == "${lit} ${outputs.model} /tmp/in"


def test_escape_roundtrip():
    text = "a ${b} $${c}"
    assert substitute(escape(text), {}) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("income", InputRef("dataset", "income", raw="income")),
        ("income:3", InputRef("dataset", "income", version=3, raw="income:3")),
        ("income.v2:latest", InputRef("dataset", "income.v2", version="latest", raw="income.v2:latest")),
        ("${params.data}", InputRef("param", "data", raw="${params.data}")),
        (
            "${steps.prep.outputs.table}",
            InputRef("step_output", "table", step="prep", raw="${steps.prep.outputs.table}"),
        ),
        ("models:/clf/3", InputRef("model", "clf", version=3, raw="models:/clf/3")),
        (
            "models:/clf@production",
            InputRef("model", "clf", alias="production", raw="models:/clf@production"),
        ),
    ],
)
def test_parse_input(text, expected):
    assert parse_input(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "income:0", "income:v2", "models:/clf", "models:/clf/x", "prefix-${params.a}", "${inputs.x}", "a b",
     "models:/clf/0", "models:/clf/latest", "models:/clf@pr.od"],
)
def test_parse_input_rejects(text):
    with pytest.raises(RefError):
        parse_input(text)


def test_partial_cannot_keep_a_reference_right_after_a_literal_dollar():
    with pytest.raises(RefError, match="literal"):
        substitute("${params.cost}${inputs.x}", {"params.cost": "5$"}, partial=True)


def test_an_unknown_run_attribute_names_every_known_one():
    from airflow_mlpipe.spec.refs import RefError, find_refs

    with pytest.raises(RefError, match=r"run has id, pipeline, step, partition and partitions"):
        find_refs("${run.nope}")
