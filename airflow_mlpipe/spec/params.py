"""Pipeline parameters (``params:``): the model, its own consistency checks, value checks and the
JSON Schema handed to Airflow's ``Param``. What any value of a type must be (a dataset reference, a
workspace path, an integer the runtime can carry...) is ``spec/values.py``; the bounds, lengths and patterns
an author declares are here."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field

from airflow_mlpipe.spec import values
from airflow_mlpipe.spec.names import REGENERATE_PARAM, VERSION_PARAM
from airflow_mlpipe.spec.refs import DATASET_REF_PATTERN
from airflow_mlpipe.spec.types import STRICT, Number
from airflow_mlpipe.spec.values import describe

ParamType = Literal["string", "integer", "number", "boolean", "enum", "dataset", "path"]
PARAM_TYPES: tuple[str, ...] = ("string", "integer", "number", "boolean", "enum", "dataset", "path")
#: the factory adds this boolean param itself (force every step to recompute).
RESERVED_PARAMS = frozenset({REGENERATE_PARAM, VERSION_PARAM})  # the endpoint DAG picks the version with it

#: a path relative to the workspace root (``values.path_problem`` in JSON Schema): no leading '/', '\\' or
#: '~', no drive letter, no URI, no '..' segment (control characters are refused by every string param).
PATH_PATTERN = r"^(?![/\\~])(?![A-Za-z]:[\\/])(?![A-Za-z][A-Za-z0-9+.-]*:/)(?!.*(^|[\\/])\.\.([\\/]|$)).+$"
_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "dataset": "string",
    "path": "string",
}
_NUMERIC = ("integer", "number")
_STRINGS = ("string", "path", "dataset")


class ParamSpec(BaseModel):
    """One pipeline parameter. It becomes an Airflow ``Param`` (trigger form, ``dag_run.conf``)."""

    model_config = STRICT

    type: ParamType = Field(
        description="Value type: string, integer, number, boolean, enum, dataset or path."
    )
    default: Any = Field(
        None, description="Default value; without one the param must be given at trigger time."
    )
    description: str | None = Field(None, description="Shown in the trigger form.")
    minimum: Number | None = Field(None, description="integer/number: smallest allowed value.")
    maximum: Number | None = Field(None, description="integer/number: largest allowed value.")
    exclusive_minimum: Number | None = Field(None, description="integer/number: value must be greater.")
    exclusive_maximum: Number | None = Field(None, description="integer/number: value must be smaller.")
    values: list[Any] | None = Field(None, description="enum: the allowed values (required for enum).")
    min_length: int | None = Field(None, ge=0, description="string: shortest allowed length.")
    max_length: int | None = Field(None, ge=0, description="string: longest allowed length.")
    pattern: str | None = Field(None, description="string: regular expression the value must match.")

    # -- consistency of the declaration itself ---------------------------------------------------

    def declaration_problems(self) -> list[tuple[str, str]]:
        """``[(field, message)]`` for fields that do not fit this param's type, then the default."""
        out: list[tuple[str, str]] = []
        t = self.type
        if t != "enum" and self.values is not None:
            out.append(("values", f"'values' is only for enum params (this one is {t})"))
        if t == "enum":
            if not self.values:
                out.append(("type", "an enum param needs a non-empty 'values' list"))
            else:
                for v in self.values:
                    if isinstance(v, (dict, list)) or v is None:
                        out.append(
                            ("values", f"enum values must be strings, numbers or booleans, got {describe(v)}")
                        )
                        break
                if len({repr(v) for v in self.values}) != len(self.values):
                    out.append(("values", "enum values must be unique"))
        for field in ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum"):
            if getattr(self, field) is not None and t not in _NUMERIC:
                out.append((field, f"'{field}' is only for integer and number params (this one is {t})"))
        for field in ("min_length", "max_length", "pattern"):
            if getattr(self, field) is not None and t != "string":
                out.append((field, f"'{field}' is only for string params (this one is {t})"))
        lo = self.minimum if self.minimum is not None else self.exclusive_minimum
        hi = self.maximum if self.maximum is not None else self.exclusive_maximum
        if lo is not None and hi is not None and lo > hi:
            out.append(("maximum", f"the bounds are empty: minimum {lo} is above maximum {hi}"))
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            out.append(("max_length", f"min_length {self.min_length} is above max_length {self.max_length}"))
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                out.append(("pattern", f"invalid regular expression {self.pattern!r}: {exc}"))
        if self.default is not None and not out:
            for msg in self.value_problems(self.default):
                out.append(("default", f"default {describe(self.default)} is invalid: {msg}"))
        return out

    # -- values --------------------------------------------------------------------------------

    def value_problems(self, value: Any) -> list[str]:
        """Why ``value`` is not acceptable for this param ([] when it is). Used for the default and,
        by the factory/operator, for values from ``dag_run.conf``."""
        t = self.type
        if value is None:
            return ["a value is required"]
        if t == "boolean":
            return [] if isinstance(value, bool) else [f"expected true or false, got {describe(value)}"]
        if t == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return [f"expected an integer, got {describe(value)}"]
            problem = values.integer_problem(value)
            return [problem] if problem else self._bounds(value)
        if t == "number":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return [f"expected a number, got {describe(value)}"]
            problem = values.number_problem(value)
            return [problem] if problem else self._bounds(value)
        if t == "enum":
            allowed = self.values or []
            if any(value == v and type(value) is type(v) for v in allowed):
                return []
            return [f"must be one of {', '.join(describe(v) for v in allowed)}, got {describe(value)}"]
        if not isinstance(value, str):
            return [f"expected a string, got {describe(value)}"]
        if t in ("dataset", "path"):
            problem = values.dataset_problem(value) if t == "dataset" else values.path_problem(value)
            return [problem] if problem else []
        problem = values.text_problem(value)
        if problem:
            return [problem]
        out = []
        if self.min_length is not None and len(value) < self.min_length:
            out.append(f"shorter than min_length {self.min_length}")
        if self.max_length is not None and len(value) > self.max_length:
            out.append(f"longer than max_length {self.max_length}")
        if self.pattern is not None:
            try:
                if re.search(self.pattern, value) is None:
                    out.append(f"does not match pattern {self.pattern!r}")
            except re.error:
                pass
        return out

    def _bounds(self, value: int | float) -> list[str]:
        out = []
        if self.minimum is not None and value < self.minimum:
            out.append(f"below minimum {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            out.append(f"above maximum {self.maximum}")
        if self.exclusive_minimum is not None and value <= self.exclusive_minimum:
            out.append(f"must be greater than {self.exclusive_minimum}")
        if self.exclusive_maximum is not None and value >= self.exclusive_maximum:
            out.append(f"must be less than {self.exclusive_maximum}")
        return out


def path_problems(value: str) -> list[str]:
    """A ``path`` param value is a relative path inside the workspace (``values.path_problem``)."""
    problem = values.path_problem(value)
    return [problem] if problem else []


def param_json_schema(param: ParamSpec) -> dict[str, Any]:
    """The JSON Schema of ``param`` as Airflow's ``Param`` takes it (``description`` excluded: it is
    ``param.description``, passed to ``Param`` separately)."""
    schema: dict[str, Any] = {values.KIND_KEY: param.type}
    if param.type == "enum":
        schema["enum"] = list(param.values or [])
        kinds = {type(v) for v in param.values or []}
        if kinds == {str}:
            schema["type"] = "string"
        return schema
    schema["type"] = _JSON_TYPES[param.type]
    if param.type in _NUMERIC:
        for field, key in (
            ("minimum", "minimum"),
            ("maximum", "maximum"),
            ("exclusive_minimum", "exclusiveMinimum"),
            ("exclusive_maximum", "exclusiveMaximum"),
        ):
            if getattr(param, field) is not None:
                schema[key] = getattr(param, field)
        if param.type == "integer":  # what the runtime carries exactly (values.integer_problem)
            schema["minimum"] = max(schema.get("minimum", -values.MAX_SAFE_INTEGER), -values.MAX_SAFE_INTEGER)
            schema["maximum"] = min(schema.get("maximum", values.MAX_SAFE_INTEGER), values.MAX_SAFE_INTEGER)
        return schema
    if param.type == "boolean":
        return schema
    # every string: no control characters (values.text_problem); "not" leaves the author's pattern alone,
    # and its "type" leaves null alone (the endpoint DAG's params are nullable)
    schema["not"] = {"type": "string", "pattern": values.CONTROL_PATTERN}
    if param.type == "string":
        if param.min_length is not None:
            schema["minLength"] = param.min_length
        schema["maxLength"] = min(param.max_length if param.max_length is not None else values.MAX_STRING_LENGTH,
                                  values.MAX_STRING_LENGTH)
        if param.pattern is not None:
            schema["pattern"] = param.pattern
    elif param.type == "dataset":
        # a registered dataset (name, name:3, name:latest) or a path inside the workspace (has a '/')
        schema["pattern"] = f"(?:{DATASET_REF_PATTERN})|(?:^(?=.*/){PATH_PATTERN[1:]})"
    elif param.type == "path":
        schema["pattern"] = PATH_PATTERN
    return schema
