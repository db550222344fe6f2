"""Safe YAML loading that keeps line numbers and refuses duplicate keys.

The document is composed once into a node tree by libyaml (``CSafeLoader``; pure-Python
``SafeLoader`` when libyaml is missing) and walked once to build the Python values and, at the same
time, ``lines``: ``{path tuple: line}`` where a path is the tuple of keys and list indexes leading to
a value (``("steps", "train", "script")``) and the line is the 1-based line of its key (mapping
entries) or of the item (list items). Only the safe YAML tags are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass
class YamlDoc:
    """The result of :func:`load_yaml`: data, line map and the problems found while loading."""

    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    #: ``(line, path tuple, message)`` for duplicate keys and syntax errors.
    problems: list[tuple[int | None, tuple, str]] = field(default_factory=list)


class _Builder:
    def __init__(self, loader: Any):
        self.loader = loader
        self.constructors = loader.yaml_constructors
        self.lines: dict[tuple, int] = {}
        self.problems: list[tuple[int | None, tuple, str]] = []
        self.active: set[int] = set()  # node ids on the current path (recursive aliases)

    def scalar(self, node: Any) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        ctor = self.constructors.get(tag)
        if ctor is None:
            line = node.start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"unsupported YAML tag {tag!r} on line {line}: definitions are plain data",
                node.start_mark,
            )
        try:
            return ctor(self.loader, node)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. an impossible date 2026-02-30
            raise yaml.constructor.ConstructorError(
                None, None, f"invalid value {node.value!r}: {exc}", node.start_mark
            ) from exc

    def build(self, node: Any, path: tuple) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        key = id(node)
        if key in self.active:
            raise yaml.constructor.ConstructorError(
                None, None, "recursive YAML alias: definitions are plain data", node.start_mark
            )
        self.active.add(key)
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    self.scalar(node)  # raises the unsupported-tag error
                out_list = []
                for i, item in enumerate(node.value):
                    sub = (*path, i)
                    self.lines[sub] = item.start_mark.line + 1
                    out_list.append(self.build(item, sub))
                return out_list
            if node.tag != _MAP:
                self.scalar(node)
            return self.mapping(node, path)
        finally:
            self.active.discard(key)

    def mapping(self, node: Any, path: tuple) -> dict:
        out: dict = {}
        first_line: dict = {}
        merged: list[Any] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(
                    (
                        key_node.start_mark.line + 1,
                        path,
                        "a mapping key must be a plain value, not a list or mapping",
                    )
                )
                continue
            k = self.scalar(key_node)
            line = key_node.start_mark.line + 1
            sub = (*path, k)
            if k in first_line:
                self.problems.append(
                    (
                        line,
                        sub,
                        f"duplicate key {k!r}: already defined on line {first_line[k]} (keys must be unique)",
                    )
                )
                continue
            first_line[k] = line
            self.lines[sub] = line
            out[k] = self.build(value_node, sub)
        # YAML merge keys ("<<: *base"): explicit keys win over merged ones
        for value_node in merged:
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for src in sources:
                if not isinstance(src, yaml.MappingNode):
                    self.problems.append(
                        (src.start_mark.line + 1, path, "'<<' merges a mapping (or a list of mappings)")
                    )
                    continue
                sub_map = self.build(src, path)
                for k, v in sub_map.items():
                    out.setdefault(k, v)
                    self.lines.setdefault((*path, k), src.start_mark.line + 1)
        return out


def load_yaml(text: str) -> YamlDoc:
    """Parse one YAML document; never raises for a bad document (problems are returned)."""
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark is not None else None
            reason = " ".join(str(exc.problem or exc).split())
            context = f" ({' '.join(exc.context.split())})" if exc.context else ""
            return YamlDoc(None, {}, [(line, (), f"YAML syntax error: {reason}{context}")])
        except yaml.YAMLError as exc:
            return YamlDoc(None, {}, [(None, (), f"YAML error: {' '.join(str(exc).split())}")])
        if node is None:
            return YamlDoc(None, {(): 1}, [])
        builder = _Builder(loader)
        builder.lines[()] = node.start_mark.line + 1
        try:
            data = builder.build(node, ())
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            line = mark.line + 1 if mark is not None else None
            return YamlDoc(None, builder.lines, [(line, (), " ".join(str(exc.problem).split()))])
        except (ValueError, TypeError) as exc:  # e.g. an impossible date such as 2026-02-30
            return YamlDoc(None, builder.lines, [(None, (), f"invalid YAML value: {exc}")])
        return YamlDoc(data, builder.lines, builder.problems)
    finally:
        loader.dispose()
