"""What a param value must be for a run to use it: ONE set of rules, applied at every door.

- the API server plugin (``airflow_mlpipe/plugins``) refuses a trigger with them (HTTP 400);
- ``mlpipe trigger`` refuses before it sends anything (exit 2);
- every mlpipe task checks its run's conf with them before any step runs (``operators/common.py``);
- the factory writes what JSON Schema can say of them into each Param (``spec/params.py``), so Airflow's
  own validation refuses those values too, whatever the door.

A param is described as Airflow describes it (``{"value": default, "schema": {...}}``, the shape of
``GET /dags/{id}/details`` and of a Param's ``dump()``); the factory marks the mlpipe type in the schema
(``mlpipe_type``: dataset, path...), and a Param without the mark (a hand-written DAG) is typed by its JSON
``type``. Standard library only (the API server and the CLI import this; ``spec.refs`` is light too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from airflow_mlpipe.rules import path_parts
from airflow_mlpipe.spec.names import REGENERATE_PARAM

#: integers a param can carry exactly through JSON, the UI (JavaScript numbers) and the step's argv
MAX_SAFE_INTEGER = 2**53 - 1
#: a param goes to the step as (part of) one argv element, and Linux refuses one over 128 KiB
#: (MAX_ARG_STRLEN): 16384 characters stay under 64 KiB whatever their UTF-8 length
MAX_STRING_LENGTH = 16384
#: dataset names (``spec.types.DATASET_NAME_PATTERN``): one folder of the workspace
MAX_NAME_LENGTH = 200
#: a path segment is a file name (255 bytes on Linux file systems); a whole key fits an S3 key (1024 bytes)
MAX_SEGMENT_BYTES = 255
MAX_PATH_BYTES = 1024
#: the key of a Param's JSON schema where the factory writes the mlpipe param type
KIND_KEY = "mlpipe_type"
#: keys a run's conf may hold on any mlpipe DAG (the factory declares them; hand-written DAGs may not)
RUN_SWITCHES = frozenset({REGENERATE_PARAM})

#: C0 and C1 control characters and DEL (newline, tab, escape...): never part of a param value
CONTROL_PATTERN = "[\\x00-\\x1f\\x7f-\\x9f]"
_CONTROL = re.compile(CONTROL_PATTERN)
_INT = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/")
_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def describe(value: Any) -> str:
    """A short, user-facing description of a value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------- strict parsing


def parse_int(text: str) -> int:
    """``"42"`` / ``"-7"`` / ``" 7 "`` -> int; ASCII digits only (``int()`` would take ``1_0`` and ``١٢``)."""
    stripped = text.strip()
    if not _INT.fullmatch(stripped):
        raise ValueError(f"not an integer: {text!r}")
    return int(stripped)


def parse_number(text: str) -> int | float:
    """An integer (kept exact) or a finite decimal number in ASCII (no ``1_0``, ``inf``, ``nan``)."""
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        return int(stripped)
    if not _NUMBER.fullmatch(stripped):
        raise ValueError(f"not a number: {text!r}")
    value = float(stripped)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


# ----------------------------------------------------------------------------------- param kinds


def json_types(schema: Mapping[str, Any] | None) -> list[str]:
    raw = (schema or {}).get("type")
    return [raw] if isinstance(raw, str) else [t for t in (raw or []) if isinstance(t, str)]


def param_kind(schema: Mapping[str, Any] | None) -> str:
    """The mlpipe type of a param (string, integer, number, boolean, enum, dataset, path), from the mark
    the factory writes in its schema, else from the JSON type; ``""`` when the schema says nothing."""
    schema = schema or {}
    kind = schema.get(KIND_KEY)
    if isinstance(kind, str) and kind:
        return kind
    if isinstance(schema.get("enum"), list):
        return "enum"
    types = [t for t in json_types(schema) if t != "null"]
    return types[0] if len(types) == 1 else ""


# ----------------------------------------------------------------------------------- value rules


def text_problem(value: str) -> str | None:
    """A text value: no control characters (newlines, tabs, escapes), at most MAX_STRING_LENGTH."""
    if value.endswith(("\n", "\r")):
        return (f"{describe(value)} ends with a newline: remove it (control characters such as newlines, "
                "tabs and escapes are not allowed in a param)")
    bad = _CONTROL.search(value)
    if bad is not None:
        return (f"{describe(value)} contains the control character {bad.group()!r} at position {bad.start()}: "
                "give the value without newlines, tabs or escapes")
    if len(value) > MAX_STRING_LENGTH:
        return (f"is {len(value)} characters long, longer than {MAX_STRING_LENGTH} characters (a param reaches "
                "the step as one command-line argument); pass big values as a file or a dataset")
    return None


def integer_problem(value: int) -> str | None:
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return None
    return (f"{describe(value)} is out of range: integers must be within "
            f"-{MAX_SAFE_INTEGER}..{MAX_SAFE_INTEGER} (what JSON, the Airflow UI and the step carry exactly)")


def number_problem(value: int | float) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{describe(value)} is not a finite number"
    return None


def path_problem(value: str) -> str | None:
    """A workspace path: relative, inside the workspace, a valid key of every datastore."""
    if not value.strip():
        return "a path cannot be empty"
    problem = text_problem(value)
    if problem:
        return problem
    if value.startswith(("/", "\\")) or _DRIVE.match(value):
        return f"{describe(value)} is absolute: give a path relative to the workspace root, like data/income.csv"
    if value.startswith("~"):
        return f"{describe(value)} starts with '~': give a path relative to the workspace root, like data/income.csv"
    if _URI.match(value):
        return (f"{describe(value)} is a URI: give a path relative to the workspace root, like data/income.csv "
                "(data elsewhere is registered as a dataset first: mlpipe datasets register)")
    parts = path_parts(value)
    if ".." in parts:
        return f"{describe(value)} contains a '..' segment: a path must stay inside the workspace"
    if len(value.encode("utf-8")) > MAX_PATH_BYTES:
        return f"{describe(value)} is longer than {MAX_PATH_BYTES} bytes (the longest object key of a datastore)"
    for part in parts:
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return (f"path segment {describe(part)} is longer than {MAX_SEGMENT_BYTES} bytes "
                    "(the longest file name)")
    return None


def workspace_key(value: str) -> str:
    """A valid workspace path -> its datastore key (``./a//b`` -> ``a/b``); ValueError with the reason."""
    if not isinstance(value, str):
        raise ValueError(f"expected a path inside the workspace, got {describe(value)}")
    problem = path_problem(value)
    if problem:
        raise ValueError(problem)
    key = "/".join(p for p in path_parts(value) if p not in ("", "."))
    if not key:
        raise ValueError(f"{describe(value)} names the workspace root, not a path inside it")
    return key


def is_path_like(value: str) -> bool:
    """A dataset param holds a path inside the workspace when the value has a '/' (names cannot)."""
    return "/" in value or "\\" in value


def dataset_problem(value: str) -> str | None:
    """A dataset param: a registered dataset (NAME, NAME:3, NAME:latest) or a path inside the workspace."""
    from airflow_mlpipe.spec.refs import RefError, parse_dataset_ref

    if value.startswith("models:"):
        return (f"{describe(value)} is a model reference, but this param takes a dataset: give a registered "
                "dataset (NAME, NAME:3, NAME:latest) or a path inside the workspace")
    if _URI.match(value):
        return (f"{describe(value)} is a URI: give a registered dataset (NAME, NAME:3, NAME:latest) or a path "
                "relative to the workspace root (register data from elsewhere first: mlpipe datasets register)")
    if is_path_like(value) or value.startswith("~"):
        return path_problem(value)
    problem = text_problem(value)
    if problem:
        return problem
    name, _, version = value.partition(":")
    if len(name) > MAX_NAME_LENGTH:
        return f"dataset name {describe(name)} is longer than {MAX_NAME_LENGTH} characters"
    try:
        parse_dataset_ref(value)
    except RefError as exc:
        return str(exc)
    if version.isdigit() and int(version) > MAX_SAFE_INTEGER:
        return f"version {describe(version)} of {value!r} is out of range"
    return None


def value_problem(name: str, value: Any, schema: Mapping[str, Any] | None) -> str | None:
    """Why ``value`` cannot be used for param ``name`` (``"param 'name': ..."``), or None. Bounds, enums
    and patterns the author declared are Airflow's to check (it validates each Param's JSON schema)."""
    if value is None:
        return None  # null: the schema says whether it is allowed
    kind = param_kind(schema)
    problem: str | None = None
    if kind in ("dataset", "path"):
        if not isinstance(value, str):
            problem = f"expected a string, got {describe(value)}"
        else:
            problem = dataset_problem(value) if kind == "dataset" else path_problem(value)
    elif kind == "integer":
        is_int = isinstance(value, int) and not isinstance(value, bool)
        problem = integer_problem(value) if is_int else f"expected an integer, got {describe(value)}"
    elif kind == "number":
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        problem = number_problem(value) if is_number else f"expected a number, got {describe(value)}"
    elif kind == "boolean" and not isinstance(value, bool):
        problem = f"expected true or false, got {describe(value)}"
    elif kind == "string":
        if not isinstance(value, str):
            problem = f"expected a string, got {describe(value)}"
        elif (schema or {}).get("format") != "multiline":  # Airflow's text area: lines are the point
            problem = text_problem(value)
    return f"param {name!r}: {problem}" if problem else None


# ----------------------------------------------------------------------------------- a whole conf


def unknown_key_problem(dag_id: str, key: str, declared: Iterable[str]) -> str:
    names = sorted(set(declared))
    return (f"{dag_id} has no param {key!r}{did_you_mean(key, names)}; "
            f"declared params: {', '.join(names) if names else 'none'}")


def conf_problems(dag_id: str, declared: Mapping[str, Mapping[str, Any]], conf: Mapping[str, Any],
                  unknown_keys: bool = True) -> list[str]:
    """Every reason to refuse ``conf`` for ``dag_id``: keys that are not declared params (unless
    ``unknown_keys`` is False: a DAG whose steps take any key), then values the rules refuse.
    ``declared``: name -> ``{"value": default, "schema": {...}}``."""
    names = set(declared) | RUN_SWITCHES
    unknown = sorted(set(conf) - names, key=str) if unknown_keys else []
    problems = [unknown_key_problem(dag_id, key, names) for key in unknown]
    for key, value in conf.items():
        if key in declared:
            problem = value_problem(key, value, declared[key].get("schema"))
            if problem:
                problems.append(problem)
    return problems


#: how the plugin and the CLI end a refusal
NOT_TRIGGERED = "Nothing was triggered: fix the conf and trigger again"


def registered_refs(declared: Mapping[str, Mapping[str, Any]], conf: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(param, ref)`` for each dataset param whose value in this run (the conf's, else the default) names
    a registered dataset: what a trigger can check against the registry."""
    out = []
    for name, spec in declared.items():
        if param_kind(spec.get("schema")) != "dataset":
            continue
        value = conf[name] if name in conf else spec.get("value")
        if isinstance(value, str) and not is_path_like(value) and dataset_problem(value) is None:
            out.append((name, value))
    return out
