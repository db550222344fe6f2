"""Typing ``--param NAME=VALUE`` by the pipeline's declared params (pure functions, no I/O).

Airflow's ``GET /api/v2/dags/{dag_id}/details`` answers ``"params": {NAME: {"value": default,
"schema": {"type": "integer", "minimum": 1, ...}, "description": ..., "source": ...}}``; the text after
``=`` is converted to the schema's type (integers and numbers in plain ASCII digits: no ``1_0``, no
``١٢``), a name that is not declared is refused here, and so is a value the shared rules refuse
(``spec/values.py``: control characters, integers beyond 53 bits, a model or a URI where a dataset or a
workspace path is expected...), before anything is sent. Bounds and patterns the pipeline declares are left
to Airflow, and whether a dataset is registered to the API server's plugin (a refused conf is an HTTP 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_mlpipe.errors import ConfError
from airflow_mlpipe.spec.names import VERSION_PARAM
from airflow_mlpipe.spec.values import (
    conf_problems,
    did_you_mean,
    parse_int,
    parse_number,
    unknown_key_problem,
)

TRUE = frozenset({"true", "yes", "y", "on", "1"})
FALSE = frozenset({"false", "no", "n", "off", "0"})


class ConfRefused(ConfError, ValueError):
    """A ``--param`` / ``--conf-json`` / ``--version`` cannot be sent: nothing was triggered."""


def declared_params(details: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> {"value", "schema", "description"} from a DAG details document."""
    out: dict[str, dict[str, Any]] = {}
    for name, spec in (details.get("params") or {}).items():
        if isinstance(spec, Mapping) and isinstance(spec.get("schema"), Mapping):
            out[name] = {"value": spec.get("value"), "schema": dict(spec["schema"]),
                         "description": spec.get("description")}
        else:  # a bare value (a param declared without Param(...))
            out[name] = {"value": spec, "schema": {}, "description": None}
    return out


def _types(schema: Mapping[str, Any]) -> tuple[list[str], bool]:
    raw = schema.get("type")
    types = [raw] if isinstance(raw, str) else [t for t in (raw or []) if isinstance(t, str)]
    return [t for t in types if t != "null"], "null" in types


def _describe(types: list[str]) -> str:
    names = {"integer": "an integer", "number": "a number", "boolean": "a boolean (true/false)",
             "string": "a string", "array": "a JSON array", "object": "a JSON object"}
    return " or ".join(names.get(t, t) for t in types)


def _example(schema: Mapping[str, Any], types: list[str], default: Any) -> str:
    if default is not None and not isinstance(default, (dict, list)):
        return json.dumps(default) if not isinstance(default, str) else default
    examples = {"integer": "10", "number": "0.5", "boolean": "true", "array": "[1,2]", "object": '{"k":1}'}
    return next((examples[t] for t in types if t in examples), "text")


def _convert(raw: str, kind: str) -> Any:
    text = raw.strip()
    if kind == "integer":
        return parse_int(text)
    if kind == "number":
        return parse_number(text)
    if kind == "boolean":
        low = text.lower()
        if low in TRUE:
            return True
        if low in FALSE:
            return False
        raise ValueError("not a boolean")
    if kind in ("array", "object"):
        value = json.loads(text)
        if not isinstance(value, list if kind == "array" else dict):
            raise ValueError(f"not a JSON {kind}")
        return value
    if kind == "string":
        return raw
    raise ValueError(f"unsupported type {kind}")


def coerce_param(name: str, raw: str, spec: Mapping[str, Any]) -> Any:
    """The typed value of ``--param name=raw`` for a declared param ``spec`` (``declared_params`` item)."""
    schema = spec.get("schema") or {}
    types, nullable = _types(schema)
    if nullable and raw.strip().lower() in ("null", "none"):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list):
        for allowed in enum:
            if (isinstance(allowed, str) and allowed == raw) or (
                not isinstance(allowed, str) and json.dumps(allowed) == raw.strip().lower()
            ):
                return allowed
        choices = ", ".join(a if isinstance(a, str) else json.dumps(a) for a in enum)
        raise ConfRefused(f"param {name!r} must be one of {choices}; got {raw!r}{did_you_mean(raw, [str(a) for a in enum])}")
    if not types:  # no declared type: JSON if it parses, else the text
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    # a string param takes the text as is; otherwise try each declared type in a stable order
    if "string" in types and len(types) == 1:
        return raw
    order = [t for t in ("boolean", "integer", "number", "array", "object") if t in types]
    for kind in order:
        try:
            return _convert(raw, kind)
        except ValueError:
            continue
    if "string" in types:
        return raw
    example = _example(schema, types, spec.get("value"))
    raise ConfRefused(f"param {name!r} is {_describe(types)}: cannot use {raw!r} "
                      f"(e.g. --param {name}={example})")


def build_conf(
    declared: Mapping[str, Mapping[str, Any]],
    pairs: list[str] | None = None,
    conf_json: str | None = None,
    version: int | None = None,
    dag_id: str = "the pipeline",
) -> dict[str, Any]:
    """``dag_run.conf`` from ``--conf-json`` (first), ``--param`` items (typed, they win) and ``--version``.
    Raises ConfRefused for unknown names, untypable values or a malformed item."""
    def unknown(name: str) -> ConfRefused:
        return ConfRefused(unknown_key_problem(dag_id, name, declared))

    conf: dict[str, Any] = {}
    if conf_json:
        try:
            loaded = json.loads(conf_json)
        except ValueError as exc:
            raise ConfRefused(f"--conf-json is not valid JSON ({exc}); pass an object like '{{\"rows\": 500}}'") from exc
        if not isinstance(loaded, dict):
            raise ConfRefused(f"--conf-json must be a JSON object, got {type(loaded).__name__}")
        for name in loaded:
            if name not in declared:
                raise unknown(name)
        conf.update(loaded)
    for item in pairs or []:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfRefused(f"--param {item!r}: expected NAME=VALUE, e.g. --param rows=500")
        if name not in declared:
            raise unknown(name)
        conf[name] = coerce_param(name, raw, declared[name])
    if version is not None:
        if VERSION_PARAM not in declared:
            raise ConfRefused(f"--version: {dag_id} is not a pipeline endpoint (it declares no "
                              f"{VERSION_PARAM!r} param); trigger the endpoint's DAG, or this DAG without --version")
        conf[VERSION_PARAM] = version
    problems = conf_problems(dag_id, declared, conf)
    if problems:
        raise ConfRefused("; ".join(problems))
    return conf
