"""The reference syntax of pipeline definitions (see docs/internals.md, "References").

In strings (step ``arguments``)::

    ${params.NAME}  ${inputs.NAME}  ${outputs.NAME}  ${run.id}  ${run.pipeline}  ${run.step}
    $${            a literal "${"

Inputs (the values of a step's ``inputs`` mapping)::

    NAME | NAME:3 | NAME:latest        a registered dataset (latest version when none is given)
    ${params.NAME}                      a param of type dataset or path
    ${steps.STEP.outputs.NAME}          another step's output (this makes a graph edge)
    models:/NAME/3 | models:/NAME@ALIAS a registered model version

References are resolved by airflow_mlpipe, never by Jinja, and never twice: a value inserted by
:func:`substitute` is data and is not scanned again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.rules import (
    NAME_PATTERN,
    VERSION_PATTERN,
    RefSyntaxError,
    parse_name_version,
    parse_registry_uri,
)

_IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_EXPR_RE = re.compile(rf"^(params|inputs|outputs|run)\.({_IDENT})$|^steps\.({_IDENT})\.outputs\.({_IDENT})$")

#: JSON Schema pattern of a dataset reference string (``name``, ``name:3``, ``name:latest``); the grammar
#: is rules.py's, shared with the workspace registry.
DATASET_REF_PATTERN = rf"^{NAME_PATTERN}(:({VERSION_PATTERN}))?$"
RUN_ATTRIBUTES = ("id", "pipeline", "step", "partition", "partitions")
KINDS = ("params", "inputs", "outputs", "run", "steps")


class RefError(DefinitionError):
    """A reference string is malformed, or could not be resolved."""

    def __init__(self, message: str):
        super().__init__(message, [message])


@dataclass(frozen=True)
class Ref:
    """One ``${...}`` reference in a template. ``name`` is the output name for ``steps`` refs."""

    kind: str  # params | inputs | outputs | run | steps
    name: str
    step: str | None = None
    start: int = 0
    end: int = 0

    @property
    def expr(self) -> str:
        """The text between ``${`` and ``}``, e.g. ``params.rows``."""
        if self.kind == "steps":
            return f"steps.{self.step}.outputs.{self.name}"
        return f"{self.kind}.{self.name}"

    @property
    def text(self) -> str:
        return "${" + self.expr + "}"


@dataclass(frozen=True)
class InputRef:
    """A parsed input reference.

    ``kind`` is ``dataset`` (``name``, ``version``: int or ``"latest"``), ``param`` (``name``),
    ``step_output`` (``step``, ``name`` = the output) or ``model`` (``name``, ``version`` or ``alias``).
    """

    kind: str
    name: str
    version: int | str | None = None
    step: str | None = None
    alias: str | None = None
    raw: str = ""


def _parse_expr(expr: str, start: int, end: int) -> Ref:
    m = _EXPR_RE.match(expr)
    if m is None:
        raise RefError(
            f"invalid reference '${{{expr}}}': expected ${{params.NAME}}, ${{inputs.NAME}}, "
            "${outputs.NAME}, ${run.id}, ${run.pipeline}, ${run.step} or ${steps.STEP.outputs.NAME}"
        )
    if m.group(1):
        kind, name = m.group(1), m.group(2)
        if kind == "run" and name not in RUN_ATTRIBUTES:
            raise RefError(f"invalid reference '${{{expr}}}': run has {', '.join(RUN_ATTRIBUTES[:-1])} and {RUN_ATTRIBUTES[-1]}")
        return Ref(kind, name, None, start, end)
    return Ref("steps", m.group(4), m.group(3), start, end)


def parse_template(template: str) -> list[str | Ref]:
    """Split ``template`` into literal strings and :class:`Ref` objects (``$${`` -> literal ``${``).

    Adjacent literals are merged. Raises :class:`RefError` on an unclosed or unknown reference.
    """
    parts: list[str | Ref] = []
    buf: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            buf.append(template[i:])
            break
        buf.append(template[i:j])
        if template.startswith("$${", j):
            buf.append("${")
            i = j + 3
        elif template.startswith("${", j):
            close = template.find("}", j + 2)
            if close < 0:
                raise RefError(
                    f"unclosed reference in {template!r}: '${{' without '}}' (write $${{ for a literal)"
                )
            literal = "".join(buf)
            if literal:
                parts.append(literal)
            buf = []
            parts.append(_parse_expr(template[j + 2 : close].strip(), j, close + 1))
            i = close + 1
        else:
            buf.append("$")
            i = j + 1
    literal = "".join(buf)
    if literal:
        parts.append(literal)
    return parts


def find_refs(template: str) -> list[Ref]:
    """Every reference in ``template``, in order (escaped ``$${`` are not references)."""
    if "${" not in template:
        return []
    return [p for p in parse_template(template) if isinstance(p, Ref)]


def escape(text: str) -> str:
    """Make ``text`` a template that renders to itself (``${`` -> ``$${``)."""
    return text.replace("${", "$${")


def format_value(value: Any) -> str:
    """How a value is written into an argv element: booleans as ``true``/``false``, None as ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


Resolver = Callable[[Ref], Any] | Mapping[str, Any]


def substitute(template: str, resolver: Resolver, *, partial: bool = False) -> str:
    """Replace the references of ``template`` by their values.

    ``resolver`` is a mapping keyed by :attr:`Ref.expr` (``"params.rows"``) or a callable taking a
    :class:`Ref`. Values are inserted as data (:func:`format_value`): a value containing ``${`` is
    never expanded again.

    With ``partial=False`` every reference must resolve (else :class:`RefError`) and the result
    is plain text. With ``partial=True`` a reference the resolver leaves unresolved (a missing key,
    or a callable returning ``None``) stays as written, and the result is still a template: literals
    and inserted values are escaped, so a later ``substitute`` (the step runtime resolving
    ``${inputs.X}``) expands only the references that were left.
    """
    if "$" not in template:
        return template
    parts = parse_template(template)
    lookup = resolver.get if isinstance(resolver, Mapping) else None
    out: list[str] = []
    literal: list[str] = []  # pending literal text (escaped as one run in partial mode)
    for part in parts:
        if isinstance(part, str):
            literal.append(part)
            continue
        value = lookup(part.expr) if lookup is not None else resolver(part)  # type: ignore[operator]
        if value is None and (lookup is None or part.expr not in resolver):  # type: ignore[operator]
            if not partial:
                raise RefError(f"cannot resolve {part.text} in {template!r}")
            text = "".join(literal)
            if text.endswith("$"):
                raise RefError(
                    f"cannot keep {part.text} unresolved in {template!r}: it follows a literal '$'"
                )
            out.append(escape(text))
            literal = []
            out.append(part.text)
            continue
        literal.append(format_value(value))
    text = "".join(literal)
    out.append(escape(text) if partial else text)
    return "".join(out)


def parse_dataset_ref(text: str) -> InputRef:
    """``name`` / ``name:3`` / ``name:latest`` -> :class:`InputRef` (kind ``dataset``)."""
    try:
        name, version, _ = parse_name_version(text)
    except RefSyntaxError as exc:
        raise RefError(f"invalid dataset reference {text!r}: {exc.detail}") from None
    return InputRef("dataset", name, version=version, raw=text)


def _parse_model_ref(text: str) -> InputRef:
    """``models:/NAME/3`` / ``models:/NAME@ALIAS`` -> :class:`InputRef` (kind ``model``). A definition names
    the version or the alias: ``models:/NAME`` alone is refused."""
    expected = "expected models:/NAME/VERSION or models:/NAME@ALIAS"
    try:
        name, version, alias = parse_registry_uri(text, "models")
    except RefSyntaxError as exc:
        raise RefError(f"invalid model reference {text!r}: {exc.detail}") from None
    if version is None and alias is None:
        raise RefError(f"invalid model reference {text!r}: {expected}")
    return InputRef("model", name, version=version, alias=alias, raw=text)


def parse_input(text: str) -> InputRef:
    """Parse the value of a step input (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise RefError("an input must be a non-empty string")
    text = text.strip()
    if text.startswith("models:"):
        return _parse_model_ref(text)
    if "$" in text:
        parts = parse_template(text)
        if len(parts) != 1 or not isinstance(parts[0], Ref):
            raise RefError(
                f"invalid input {text!r}: an input is exactly one reference, e.g. ${{steps.prep.outputs.table}}"
            )
        ref = parts[0]
        if ref.kind == "params":
            return InputRef("param", ref.name, raw=text)
        if ref.kind == "steps":
            return InputRef("step_output", ref.name, step=ref.step, raw=text)
        raise RefError(
            f"invalid input {text!r}: an input is a dataset, a model, ${{params.NAME}} or "
            "${steps.STEP.outputs.NAME}"
        )
    return parse_dataset_ref(text)
