"""Problems found in a definition: the record, the one-line format, "did you mean", and the
translation of pydantic errors into that format (a user never sees a pydantic dump)."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.spec.values import describe


@dataclass(frozen=True)
class Problem:
    """One problem: ``file:line: path: message (did you mean 'x'?)``."""

    file: str
    line: int | None
    path: str
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        return f"{text} (did you mean '{self.hint}'?)" if self.hint else text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def did_you_mean(word: Any, candidates: Iterable[Any]) -> str | None:
    """The closest candidate to ``word``, if one is close enough."""
    if not isinstance(word, str):
        return None
    names = [c for c in candidates if isinstance(c, str)]
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    if not match:
        lowered = {c.lower(): c for c in names}
        return lowered.get(word.lower())
    return match[0]


def format_path(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def line_for(lines: dict[tuple, int], path: tuple) -> int | None:
    """Line of ``path`` or of its nearest parent present in the file."""
    for n in range(len(path), -1, -1):
        line = lines.get(path[:n])
        if line is not None:
            return line
    return None


class Collector:
    """Accumulates the problems of one file."""

    def __init__(self, file: str, lines: dict[tuple, int]):
        self.file = file
        self.lines = lines
        self.problems: list[Problem] = []

    def add(self, path: tuple, message: str, hint: str | None = None, line: int | None = None) -> None:
        if line is None:
            line = line_for(self.lines, path)
        problem = Problem(self.file, line, format_path(path), message, hint)
        if problem not in self.problems:
            self.problems.append(problem)

    def raise_if_any(self) -> None:
        if self.problems:
            raise definition_error(self.file, self.problems)


def definition_error(file: str, problems: list[Problem]) -> DefinitionError:
    ordered = sorted(problems, key=lambda p: (p.line is None, p.line or 0))
    n = len(ordered)
    head = f"{n} problem{'s' if n != 1 else ''} in {file}"
    return DefinitionError("\n".join([head, *(str(p) for p in ordered)]), ordered)


# --- pydantic error translation ------------------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    """Strip Annotated / Optional / SerializeAsAny wrappers."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _union_models(tp: Any) -> dict[str, type[BaseModel]]:
    """``{tag: model}`` of a union of models discriminated by a Literal ``type`` field."""
    out = {}
    for arg in typing.get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "type" in arg.model_fields:
            for tag in typing.get_args(arg.model_fields["type"].annotation):
                out[tag] = arg
    return out


def walk_loc(model: type[BaseModel], loc: tuple) -> tuple[tuple, type[BaseModel] | None, dict[str, type]]:
    """Map a pydantic ``loc`` to the YAML path (discriminator tags and ``[key]`` markers removed).

    Returns ``(path, model owning the last field, {tag: model} if loc ends on a tagged union)``.
    """
    path: list[Any] = []
    tp: Any = model
    owner: type[BaseModel] | None = model
    tags: dict[str, type] = {}
    for item in loc:
        if item == "[key]":
            break
        tp = _unwrap(tp)
        tags = _union_models(tp)
        if tags and item in tags:
            tp = tags[item]
            tags = {}
            continue
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            owner = tp
            path.append(item)
            info = tp.model_fields.get(item) if isinstance(item, str) else None
            tp = info.annotation if info is not None else Any
            continue
        origin = typing.get_origin(tp)
        path.append(item)
        if origin is dict:
            tp = typing.get_args(tp)[1]
        elif origin is list:
            tp = typing.get_args(tp)[0]
        else:
            tp = Any
    tp = _unwrap(tp)
    return tuple(path), owner, _union_models(tp)


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
    "dict": "a mapping",
    "model": "a mapping",
    "list": "a list",
}


def translate(
    model: type[BaseModel], error: dict[str, Any], prefix: tuple = ()
) -> tuple[tuple, str, str | None]:
    """One pydantic error -> ``(yaml path, message, hint)``."""
    loc = tuple(error.get("loc", ()))
    path, owner, tags = walk_loc(model, loc)
    kind = error.get("type", "")
    value = error.get("input")
    ctx = error.get("ctx") or {}
    full = (*prefix, *path)
    if "[key]" in loc:  # a mapping key of the wrong type, e.g. "1:" read as an integer
        return (
            full,
            f"invalid name {describe(path[-1] if path else value)}: names are strings (quote it)",
            None,
        )
    if kind == "extra_forbidden":
        field = path[-1] if path else "?"
        fields = list(owner.model_fields) if owner is not None else []
        return full, f"unknown field {field!r}", did_you_mean(field, fields)
    if kind == "missing":
        field = path[-1] if path else "?"
        return full[:-1], f"missing required field {field!r}", None
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        allowed = list(tags) or [t.strip("'") for t in str(ctx.get("expected_tags", "")).split(", ") if t]
        if kind == "union_tag_not_found":
            return full, f"missing field 'type' (one of: {', '.join(allowed)})", None
        tag = ctx.get("tag", "")
        return (
            (*full, "type"),
            f"unknown type {tag!r} (expected one of: {', '.join(allowed)})",
            did_you_mean(tag, allowed),
        )
    if kind == "value_error":
        return full, str(ctx.get("error", error.get("msg", ""))), None
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        choices = [c.strip().strip("'") for c in expected.split(",") if c.strip()]
        return full, f"expected one of {expected}, got {describe(value)}", did_you_mean(value, choices)
    for prefix_word, words in _TYPE_WORDS.items():
        if kind.startswith(prefix_word + "_") and kind.endswith(("_type", "_parsing", "_from_float")):
            return full, f"expected {words}, got {describe(value)}", None
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[
            kind
        ]
        bound = next(iter(ctx.values()), "?")
        return full, f"must be {op} {bound}, got {describe(value)}", None
    msg = str(error.get("msg", "invalid value")).rstrip(".")
    return full, f"{msg[:1].lower()}{msg[1:]}, got {describe(value)}", None
