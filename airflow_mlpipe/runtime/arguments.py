"""Resolution of the launch context's ``argv`` into the script's ``sys.argv[1:]``.

Format (docs/internals.md): a list of argv elements, each a list of segments. A string segment is
literal text (params and run values were substituted by the operator); ``{"input": NAME}`` and
``{"output": NAME}`` stand for the local path the runtime materialised. Segments are joined, never
parsed: a value containing ``${inputs.x}`` or ``$(...)`` stays exactly that text.

A bare string element is accepted as a one-segment literal (same no-parsing rule).
"""

from __future__ import annotations

import pathlib
from typing import Any

from airflow_mlpipe.errors import MlpipeError


class ArgvError(MlpipeError, ValueError):
    """The launch context's ``argv`` is malformed or names an undeclared input/output (permanent: the step's
    arguments must change)."""

    permanent = True


def resolve_argv(
    argv: list[Any], inputs: dict[str, pathlib.Path], outputs: dict[str, pathlib.Path]
) -> list[str]:
    if not isinstance(argv, list):
        raise ArgvError(f"argv must be a list, got {type(argv).__name__}")
    resolved: list[str] = []
    for index, element in enumerate(argv):
        segments = [element] if isinstance(element, str) else element
        if not isinstance(segments, list):
            raise ArgvError(f"argv[{index}] must be a list of segments or a string, got {element!r}")
        parts: list[str] = []
        for segment in segments:
            parts.append(_segment(segment, index, inputs, outputs))
        resolved.append("".join(parts))
    return resolved


def _segment(segment: Any, index: int, inputs: dict[str, pathlib.Path], outputs: dict[str, pathlib.Path]) -> str:
    if isinstance(segment, str):
        return segment
    if isinstance(segment, (int, float)) and not isinstance(segment, bool):
        return str(segment)
    if isinstance(segment, dict) and len(segment) == 1:
        (kind, name), = segment.items()
        table = {"input": inputs, "output": outputs}.get(kind)
        if table is None:
            raise ArgvError(f"argv[{index}]: unknown reference {segment!r} (expected 'input' or 'output')")
        if name not in table:
            declared = ", ".join(sorted(table)) or "none"
            raise ArgvError(f"argv[{index}] refers to {kind} {name!r}, which is not declared (declared: {declared})")
        return str(table[name])
    raise ArgvError(f"argv[{index}]: segment {segment!r} is neither text nor an input/output reference")
