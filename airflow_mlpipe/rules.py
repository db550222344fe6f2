"""Rules written once, used by the definitions (``spec``), the workspace and the step runtime.

- **Relative paths**: :func:`relative_parts` (a path relative to a root that cannot leave it),
  :func:`path_parts` (both ``/`` and ``\\`` separate parts) and :func:`is_plain_segment` (one path
  segment that is not ``''``, ``.`` or ``..``).
- **Safe tar extraction**: :func:`extract_tar` writes regular files and directories inside the destination
  and nothing else; a member with an absolute path, a ``..`` part, a link, a device or a fifo refuses the
  whole archive before anything is written (:class:`ArchiveError`).
- **Output destinations**: :data:`DEFAULT_DESTINATION` and :func:`fill_destination` (a ``destination``
  template's placeholders filled in; the workspace checks the key).
- **Registry references**: :func:`parse_registry_ref` for ``NAME``, ``NAME:3``, ``NAME:latest``,
  ``<kind>:/NAME``, ``<kind>:/NAME/3`` and ``<kind>:/NAME@ALIAS`` (:class:`RefSyntaxError`).

Errors here are ``MlpipeError`` and ``ValueError`` subclasses (permanent) that say what is wrong; each caller
wraps them in its own error class with its own advice (``RefError`` in spec, ``WorkspaceError`` in the
workspace, ``RuntimeStepError`` in the runtime). Standard library only, and of airflow_mlpipe only
``errors`` (shipped with it): the step runtime ships this module into python3-only images (``runtime/bundle.py``).
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import TYPE_CHECKING, NamedTuple

from airflow_mlpipe.errors import MlpipeError

if TYPE_CHECKING:  # tarfile (and shutil, lzma...) is imported when an archive is extracted, not at parse time
    import tarfile

__all__ = [
    "ALIAS_PATTERN",
    "DEFAULT_DESTINATION",
    "DESTINATION_FIELDS",
    "NAME_PATTERN",
    "VERSION_PATTERN",
    "ArchiveError",
    "RefSyntaxError",
    "RegistryRef",
    "extract_tar",
    "fill_destination",
    "is_plain_segment",
    "parse_name_version",
    "parse_registry_ref",
    "parse_registry_uri",
    "path_parts",
    "relative_parts",
]

# -- output destinations ----------------------------------------------------------------------------------

DEFAULT_DESTINATION = "outputs/{pipeline}/{run_id}/{step}/{output}"
"""Where a step output is committed in the workspace unless its ``destination`` says otherwise."""
DESTINATION_FIELDS = ("pipeline", "run_id", "step", "output")


def fill_destination(template: str, *, pipeline: str, run_id: str, step: str, output: str) -> str:
    """``template`` with its placeholders (:data:`DESTINATION_FIELDS`) filled in; ValueError naming the template
    and the placeholders allowed when it has another one (or a malformed brace)."""
    try:
        return template.format(pipeline=pipeline, run_id=run_id, step=step, output=output)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"invalid destination {template!r} ({exc!r}); use only the placeholders "
                         "{pipeline}, {run_id}, {step} and {output}") from exc


# -- relative paths ---------------------------------------------------------------------------------------


def path_parts(value: str) -> list[str]:
    """The parts of ``value`` split at ``/`` and at ``\\`` (a path written on Windows separates with both)."""
    return value.replace("\\", "/").split("/")


def relative_parts(value: str) -> list[str] | None:
    """The parts of ``value`` (:func:`path_parts`) if it is a relative path that stays below its root, else
    None: empty, absolute (``/x``, ``\\x``), with a drive (a second character ``:`` as in ``C:x``; never a
    portable file name) or with a ``..`` part. Empty and ``.`` parts are kept (``a//./b`` is relative)."""
    if not isinstance(value, str) or not value or value.startswith(("/", "\\")) or value[1:2] == ":":
        return None
    parts = path_parts(value)
    return None if ".." in parts else parts


def is_plain_segment(segment: str) -> bool:
    """True if ``segment`` can be one path segment: not empty, not ``.`` or ``..``, no ``/``, ``\\`` or NUL."""
    return (isinstance(segment, str) and segment not in ("", ".", "..")
            and not any(ch in segment for ch in "/\\\x00"))


# -- safe tar extraction ----------------------------------------------------------------------------------


class ArchiveError(MlpipeError, ValueError):
    """A tar archive cannot be read, or holds a member that would not stay a plain file or directory inside
    the destination. Nothing was extracted when a member was refused. Permanent: the same archive fails again."""

    permanent = True


def _member_problem(member: tarfile.TarInfo, root: pathlib.Path) -> str | None:
    """Why ``member`` may not be extracted below the resolved directory ``root``, or None."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        return f"member {name!r} has an absolute path or a '..' part: it would be written outside {root}"
    target = (root / name).resolve()
    if target != root and root not in target.parents:
        return f"member {name!r} would be written outside {root} (through a link already there)"
    if member.issym() or member.islnk():
        return f"member {name!r} is a link (to {member.linkname!r}): only regular files and directories are extracted"
    if not (member.isfile() or member.isdir()):
        return f"member {name!r} is not a regular file or a directory (a device or a fifo)"
    return None


def _checked_members(tar: tarfile.TarFile, dest: pathlib.Path) -> list[tarfile.TarInfo]:
    """Every member of ``tar`` if each one is safe to extract into ``dest``, else ArchiveError."""
    root = dest.resolve()
    members = tar.getmembers()
    for member in members:
        problem = _member_problem(member, root)
        if problem:
            raise ArchiveError(f"refused archive: {problem}")
    return members


def _extract_members(tar: tarfile.TarFile, dest: pathlib.Path) -> list[str]:
    import tarfile

    members = _checked_members(tar, dest)
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
    else:  # pragma: no cover - Python < 3.10.12 / 3.11.4: the members were checked above
        for member in members:
            member.mode = 0o755 if member.isdir() else 0o644
        tar.extractall(dest, members=members)  # noqa: S202
    return [m.name for m in members if m.isfile()]


def extract_tar(archive: str | os.PathLike[str] | tarfile.TarFile, dest: str | os.PathLike[str]) -> list[str]:
    """Extract ``archive`` (a path to a tar file, compressed or not, or an open TarFile) into ``dest``
    (created if missing) and return the names of the regular files extracted.

    Every member is checked before anything is written: an absolute name, a ``..`` part, a path through a
    link already in ``dest``, a symbolic or hard link, a device or a fifo refuses the whole archive with
    :class:`ArchiveError`; so does an archive that cannot be read. Python's ``filter="data"`` is applied
    too when it has one. OSError (a full disk...) propagates as it is."""
    import tarfile

    target = pathlib.Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if isinstance(archive, tarfile.TarFile):
            return _extract_members(archive, target)
        with tarfile.open(archive, mode="r:*") as tar:
            return _extract_members(tar, target)
    except (tarfile.TarError, EOFError) as exc:  # a FilterError of filter="data" is a TarError too
        raise ArchiveError(f"cannot read or extract the archive: {exc}") from exc


# -- registry references ----------------------------------------------------------------------------------

#: a registered dataset or model name (at most 200 characters; never '.' or '..', which start with '.').
NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}"
#: an alias of a model version (``production``).
ALIAS_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]*"
#: a version: ASCII digits (the number, at least 1) or ``latest``.
VERSION_PATTERN = r"[0-9]+|latest"

_NAME_VERSION_RE = re.compile(rf"({NAME_PATTERN})(?::({VERSION_PATTERN}))?")
_URI_RE = re.compile(rf"([a-z]+):/({NAME_PATTERN})(?:/([0-9]+)|@({ALIAS_PATTERN}))?")


class RefSyntaxError(MlpipeError, ValueError):
    """A registry reference does not follow the grammar. ``detail`` says what is expected (callers put it
    after their own "invalid dataset reference 'x': "). Permanent: the reference must change."""

    permanent = True

    def __init__(self, ref: object, detail: str):
        super().__init__(f"invalid reference {ref!r}: {detail}")
        self.ref = ref
        self.detail = detail


class RegistryRef(NamedTuple):
    """A parsed registry reference. ``version`` is an int, ``"latest"``, or None when the reference names no
    version (``NAME``, ``<kind>:/NAME``: the latest, to whoever resolves it, or an alias)."""

    name: str
    version: int | str | None
    alias: str | None


def _version(text: str | None, ref: str) -> int | str | None:
    """The version part of ``ref`` as written (digits -> int) -> int, ``"latest"`` or None."""
    if text is None or text == "latest":
        return text
    if int(text) < 1:
        raise RefSyntaxError(ref, "versions start at 1")
    return int(text)


def parse_name_version(text: str) -> RegistryRef:
    """``NAME`` / ``NAME:3`` / ``NAME:latest`` -> RegistryRef (no alias), else RefSyntaxError."""
    m = _NAME_VERSION_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise RefSyntaxError(
            text, "expected NAME, NAME:VERSION or NAME:latest (NAME: letters, digits, '_', '.', '-'; at most 200 characters)"
        )
    return RegistryRef(m.group(1), _version(m.group(2), text), None)


def parse_registry_uri(text: str, kind: str) -> RegistryRef:
    """``<kind>:/NAME/3`` / ``<kind>:/NAME@ALIAS`` -> RegistryRef, else RefSyntaxError. ``<kind>:/NAME``
    (no version: the latest, to the registry) is accepted too; a pipeline definition refuses it (spec/refs.py)."""
    m = _URI_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None or m.group(1) != kind:
        raise RefSyntaxError(text, f"expected {kind}:/NAME/VERSION or {kind}:/NAME@ALIAS")
    return RegistryRef(m.group(2), _version(m.group(3), text), m.group(4))


def parse_registry_ref(text: str, kind: str) -> RegistryRef:
    """A reference to a version in the registry ``kind`` (``datasets`` or ``models``): the URI form when
    ``text`` starts with ``<kind>:/`` (:func:`parse_registry_uri`), else ``NAME[:VERSION]``
    (:func:`parse_name_version`). No space is stripped. RefSyntaxError when it is malformed."""
    if isinstance(text, str) and text.startswith(f"{kind}:/"):
        return parse_registry_uri(text, kind)
    return parse_name_version(text)
