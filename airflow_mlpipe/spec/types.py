"""Reusable field types of the pipeline format: names, durations, numbers, sizes, dates.

Each type is ``Annotated[...]`` with one validator that raises ``ValueError`` with a plain
sentence (the loader turns it into ``file:line: path: sentence``) and an explicit JSON Schema,
so no field needs a pydantic union (unions produce one error per member).
"""

from __future__ import annotations

import datetime as _dt
import re
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, WithJsonSchema

from airflow_mlpipe.rules import NAME_PATTERN as NAME_PATTERN_OF_REGISTRY
from airflow_mlpipe.spec.values import describe

#: model config shared by every model of the format: unknown keys are errors.
STRICT = ConfigDict(extra="forbid", frozen=False, validate_default=False)

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$"
PIPELINE_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,200}$"
DATASET_NAME_PATTERN = rf"^{NAME_PATTERN_OF_REGISTRY}$"  # rules.py: the registry's names
_NAME_RE = re.compile(NAME_PATTERN)
_PIPELINE_RE = re.compile(PIPELINE_NAME_PATTERN)
_DATASET_RE = re.compile(DATASET_NAME_PATTERN)


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME_RE.match(value) is not None


def is_dataset_name(value: object) -> bool:
    return isinstance(value, str) and _DATASET_RE.match(value) is not None


def name_problem(value: object, what: str = "name") -> str | None:
    """Why ``value`` is not a valid step/param/input/output/compute/environment name, or None."""
    if is_name(value):
        return None
    return (
        f"invalid {what} {describe(value)}: use letters, digits, '_' and '-', starting with a letter "
        "or '_' (at most 100 characters)"
    )


def _pipeline_name(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    if not _PIPELINE_RE.match(value):
        raise ValueError(
            f"invalid pipeline name {describe(value)}: use letters, digits, '_', '.' and '-' "
            "(at most 200 characters); it becomes the dag_id"
        )
    return value


def _dataset_name(value: Any) -> Any:
    if not isinstance(value, str) or not _DATASET_RE.match(value):
        raise ValueError(
            f"invalid dataset name {describe(value)}: use letters, digits, '_', '.' and '-' (no version here)"
        )
    return value


def _ident(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(f"expected a name, got {describe(value)}")
    msg = name_problem(value)
    if msg:
        raise ValueError(msg)
    return value


PipelineName = Annotated[
    str, BeforeValidator(_pipeline_name), WithJsonSchema({"type": "string", "pattern": PIPELINE_NAME_PATTERN})
]
DatasetName = Annotated[
    str, BeforeValidator(_dataset_name), WithJsonSchema({"type": "string", "pattern": DATASET_NAME_PATTERN})
]
Name = Annotated[str, BeforeValidator(_ident), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})]


# --- durations --------------------------------------------------------------------------------

_DURATION_RE = re.compile(r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")
DURATION_PATTERN = r"^\s*(\d+\s*d)?\s*(\d+\s*h)?\s*(\d+\s*m)?\s*(\d+\s*s)?\s*$"


def parse_duration(value: Any) -> int:
    """``30`` / ``"30s"`` / ``"10m"`` / ``"2h"`` / ``"1h30m"`` / ``"1d"`` -> seconds (int)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30, '30s', '10m' or '1h30m', got {describe(value)}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        m = _DURATION_RE.match(text)
        if text and m and any(m.groups()):
            d, h, mi, s = (int(g) if g else 0 for g in m.groups())
            return ((d * 24 + h) * 60 + mi) * 60 + s
    raise ValueError(f"expected a duration like 30, '30s', '10m' or '1h30m', got {describe(value)}")


Duration = Annotated[
    int,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}]}
    ),
]


# --- numbers and sizes ------------------------------------------------------------------------


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {describe(value)}")
    return value


def _positive_number(value: Any) -> Any:
    _number(value)
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value


Number = Annotated[Any, BeforeValidator(_number), WithJsonSchema({"type": "number"})]
PositiveNumber = Annotated[
    Any, BeforeValidator(_positive_number), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})
]

MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?([kKmMgGtTpPeE]i?)?[bB]?$"
_MEMORY_RE = re.compile(MEMORY_PATTERN)


def _memory(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    if isinstance(value, str) and _MEMORY_RE.match(value.strip()):
        return value.strip()
    raise ValueError(f"expected a memory size like '512m', '1g' or '2Gi', got {describe(value)}")


Memory = Annotated[
    str,
    BeforeValidator(_memory),
    WithJsonSchema(
        {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": MEMORY_PATTERN}]}
    ),
]

CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
_CPU_RE = re.compile(CPU_PATTERN)


def _cpu(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and _CPU_RE.match(value.strip()) and value.strip() not in ("0", "0m"):
        return value.strip()
    raise ValueError(f"expected a CPU amount like 2, 0.5 or '500m', got {describe(value)}")


Cpu = Annotated[
    Any,
    BeforeValidator(_cpu),
    WithJsonSchema(
        {"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": CPU_PATTERN}]}
    ),
]


def _scalar(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)):
        return value
    raise ValueError(f"expected a string, number or boolean, got {describe(value)}")


Scalar = Annotated[
    Any, BeforeValidator(_scalar), WithJsonSchema({"type": ["string", "number", "integer", "boolean"]})
]


def _env_map(value: Any) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a mapping of names to values, got {describe(value)}")
    out = {}
    for key, val in value.items():
        if not isinstance(key, str):
            raise ValueError(f"keys must be strings, got {describe(key)}")
        if isinstance(val, dict) or isinstance(val, list) or val is None:
            raise ValueError(f"value of {key!r} must be a string, number or boolean, got {describe(val)}")
        out[key] = ("true" if val else "false") if isinstance(val, bool) else str(val)
    return out


#: a mapping of strings (environment variables, labels, annotations, node selector); scalars
#: are accepted and stored as strings.
StrMap = Annotated[
    dict[str, str],
    BeforeValidator(_env_map),
    WithJsonSchema({"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}),
]


def none_to_empty_list(value: Any) -> Any:
    return [] if value is None else value


def none_to_empty_dict(value: Any) -> Any:
    return {} if value is None else value


# --- dates --------------------------------------------------------------------------------------


def parse_start_date(value: Any) -> Any:
    """An absolute date or datetime (YAML gives ``date``/``datetime``; ISO strings are accepted)."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            parsed = _dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed
    raise ValueError(
        f"expected an absolute date like 2026-01-01 or 2026-01-01T06:00:00Z, got {describe(value)} "
        "(relative dates such as 'yesterday' or days_ago() make runs unreproducible)"
    )


StartDate = Annotated[
    _dt.datetime,
    BeforeValidator(parse_start_date),
    WithJsonSchema({"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}),
]
