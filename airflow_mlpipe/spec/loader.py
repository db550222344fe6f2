"""Safe YAML loading that keeps line numbers and refuses duplicate keys.

The document is composed once into a node tree by libyaml (``CSafeLoader``; pure-Python
``SafeLoader`` when libyaml is missing) and walked once to build the Python values and, at the same
time, ``lines``: ``{path tuple: line}`` where a path is the tuple of keys and list indexes leading to
a value (``("steps", "train", "script")``) and the line is the 1-based line of its key (mapping
entries) or of the item (list items). Only the safe YAML tags are accepted.

Aliases are shared node objects in the composed tree, so a few lines can stand for billions of values
("billion laughs": nine lists of nine aliases of the list above). Before anything is built, a file with
anchors gets one pass over its distinct nodes (memoised, so it costs what the file's own nodes cost) that
measures what the aliases add once expanded; over ``MAX_ALIAS_VALUES`` the file is refused with one
problem on the line of the value that passes the limit, in about a millisecond. Values nested deeper
than ``MAX_DEPTH`` are refused too (the builder would exhaust Python's stack).
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

#: values aliases may add to a definition once expanded. Real definitions use aliases for shared
#: settings (``resources: *res``, ``<<: *defaults``): 200 steps that each repeat a 10-value mapping add
#: 2,000. The nine-level bomb adds 387 million; 100,000 costs the builder about 0.3 s and 16 MB.
MAX_ALIAS_VALUES = 100_000
#: nesting levels of values; definitions are about 6 deep. Deeper files would exhaust Python's stack
#: in the builder (libyaml itself stops at 1,000 levels).
MAX_DEPTH = 100


@dataclass
class YamlDoc:
    """The result of :func:`load_yaml`: data, line map and the problems found while loading."""

    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)
    #: ``(line, path tuple, message)`` for duplicate keys and syntax errors.
    problems: list[tuple[int | None, tuple, str]] = field(default_factory=list)


def _children(node: Any) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return node.value


def _alias_bomb(root: Any) -> tuple[int, str] | None:
    """``(line, message)`` when aliases, once expanded, add more than ``MAX_ALIAS_VALUES`` values to the
    document, else None. One iterative pass memoised on node identity: each distinct collection is
    walked once, whatever the number of aliases pointing at it. The line is that of the first value
    (innermost, in document order) whose aliases alone pass the limit. A recursive alias counts 0 here
    (the builder reports it)."""
    if isinstance(root, yaml.ScalarNode):
        return None
    scalar = yaml.ScalarNode
    memo: dict[int, int] = {}  # id of a collection -> its values once expanded
    on_path = {id(root)}
    seen = 1  # distinct collections entered + scalar values met, so far
    # frame: [node, children, next child, values so far, `seen` when the node was entered]
    frames: list[list[Any]] = [[root, _children(root), 0, 1, 0]]
    while frames:
        frame = frames[-1]
        kids = frame[1]
        i = frame[2]
        entered = False
        while i < len(kids):
            kid = kids[i]
            i += 1
            if isinstance(kid, scalar):
                frame[3] += 1
                seen += 1
                continue
            key = id(kid)
            size = memo.get(key)
            if size is not None:
                frame[3] += size  # an alias (or a merge) of a collection met before
            elif key not in on_path:
                frame[2] = i
                on_path.add(key)
                seen += 1
                frames.append([kid, _children(kid), 0, 1, seen - 1])
                entered = True
                break
        if entered:
            continue
        frames.pop()
        node, size = frame[0], frame[3]
        on_path.discard(id(node))
        memo[id(node)] = size
        if size - (seen - frame[4]) > MAX_ALIAS_VALUES:
            return node.start_mark.line + 1, (
                f"YAML aliases expand the value on this line to {size:,} values, more than the "
                f"{MAX_ALIAS_VALUES:,} that aliases may add to a definition (a 'billion laughs' alias bomb?): "
                "write the values out, or use fewer and smaller aliases"
            )
        if frames:
            frames[-1][3] += size
    return None


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
        if len(path) >= MAX_DEPTH:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"values nested more than {MAX_DEPTH} levels deep: a definition is a few levels deep; "
                "flatten this value",
                node.start_mark,
            )
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
        too_big = _alias_bomb(node) if "&" in text else None  # no anchor, no alias
        if too_big is not None:
            return YamlDoc(None, {(): node.start_mark.line + 1}, [(too_big[0], (), too_big[1])])
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
