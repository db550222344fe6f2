"""One versioned-registry mechanism for datasets and models (docs/internals.md, workspace layout).

```
<kind>/<name>/versions/<000001>.json   version record, claimed with create_json (unique, consecutive)
<kind>/<name>/latest.json              {"version": N}: a hint, N <= the latest; moved forward only (CAS)
<kind>/<name>/data/<digest>/...        content, copied in once (manifest last), immutable
<kind>/<name>/digests/<digest>.json    {"version": N}: the first version holding this content
<kind>/<name>/aliases/<alias>.json     {"version": N, "history": [...]}, compare-and-swap writes
```

Registering content that an existing version already holds returns that version. Two writers that
register the *same new* content at the same instant may both get a version (each is valid and the
digest index names the first); different content always gets distinct, consecutive numbers.

Nothing that a register or a ``name:latest`` does grows with the history. ``latest.json`` points at a version
that exists; a writer creates version N+1 first and moves the pointer after, so the pointer may lag (a writer
died in between) but is never ahead. The latest is the pointer, moved forward while the next number exists
(one ``exists`` when it is current); the next number is claimed from there with ``create_json``, the next
one tried when it is taken. A name registered before the pointer existed is listed once, and gains it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import random
import re
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from airflow_mlpipe.errors import ConflictError, InvalidReferenceError, NotFoundError, WorkspaceError
from airflow_mlpipe.rules import ALIAS_PATTERN, RefSyntaxError, is_plain_segment, parse_registry_ref
from airflow_mlpipe.workspace.datastore import Datastore, check_prefix, join_key
from airflow_mlpipe.workspace.manifest import (
    build_manifest,
    commit_output,
    hash_file,
    make_manifest,
    now_iso,
    read_manifest,
    seal_output,
    verify_content,
)

__all__ = ["KINDS", "VersionedRegistry", "Version", "check_name"]

KINDS = ("datasets", "models")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ALIAS = re.compile(ALIAS_PATTERN)  # what a reference can name (rules.py): no '.'
_WIDTH = 6
MAX_CLAIM_ATTEMPTS = 200
MAX_CAS_ATTEMPTS = 100


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or not is_plain_segment(name):
        raise InvalidReferenceError(f"invalid {what} {name!r}: use letters, digits, '_', '.', '-'")
    return name


@dataclasses.dataclass(frozen=True)
class Version:
    name: str
    version: int
    digest: str
    key: str  # the data prefix (holds a _manifest.json)
    uri: str
    size: int
    files: int
    created: str
    description: str = ""
    tags: dict = dataclasses.field(default_factory=dict)
    producing_run: dict | None = None
    extra: dict | None = None
    kind: str = "datasets"
    #: True only on the Version that ``register`` returned after creating it (False when the content was
    #: already registered, and on any version read back); not part of the record, nor of equality
    is_new: bool = dataclasses.field(default=False, compare=False, repr=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        del doc["is_new"]
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> Version:
        fields = {f.name for f in dataclasses.fields(cls)} - {"is_new"}
        return cls(**{k: v for k, v in doc.items() if k in fields})


class VersionedRegistry:
    """Named, numbered, immutable versions of content in one datastore (``kind``: datasets or models)."""

    def __init__(self, datastore: Datastore, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown registry kind {kind!r}; expected one of {KINDS}")
        self.datastore = datastore
        self.kind = kind
        self._singular = kind[:-1]

    # -- keys
    def _base(self, name: str) -> str:
        return f"{self.kind}/{check_name(name, self._singular + ' name')}"

    def _version_key(self, name: str, version: int) -> str:
        return f"{self._base(name)}/versions/{version:0{_WIDTH}d}.json"

    def data_key(self, name: str, digest: str) -> str:
        return f"{self._base(name)}/data/{digest}"

    def _pointer_key(self, name: str) -> str:
        return f"{self._base(name)}/latest.json"

    def _alias_key(self, name: str, alias: str) -> str:
        return f"{self._base(name)}/aliases/{check_name(alias, 'alias')}.json"

    # -- reading
    def list_names(self) -> list[str]:
        return [name for name in self.datastore.list_dirs(self.kind) if _NAME.match(name)]

    def version_numbers(self, name: str) -> list[int]:
        """Every version number of ``name``, from a listing of its records (grows with the history: an
        inventory; the latest is ``latest_number``, one version ``get``)."""
        prefix = f"{self._base(name)}/versions"
        numbers = []
        for info in self.datastore.list(prefix):
            stem = info.key[len(prefix) + 1 :].removesuffix(".json")
            if stem.isdigit() and "/" not in stem:
                numbers.append(int(stem))
        return sorted(numbers)

    def iter_versions(self, name: str, start: int = 1) -> Iterator[Version]:
        """The versions of ``name`` from number ``start`` on, in version order, read one at a time (no
        listing: numbers are consecutive up to ``latest_number``; a missing record is skipped)."""
        latest = self.latest_number(name)
        for number in range(max(int(start), 1), latest + 1):
            doc = self.datastore.get_json_or_none(self._version_key(name, number))
            if doc is not None:
                yield Version.from_dict(doc)

    def list_versions(self, name: str, start: int = 1, limit: int | None = None) -> list[Version]:
        """A page of versions of ``name``: at most ``limit`` (None: all) from number ``start`` on, in order.
        The next page starts after the last version returned."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit!r}")
        out = []
        for version in self.iter_versions(name, start):
            out.append(version)
            if limit is not None and len(out) >= limit:
                break
        return out

    def latest_number(self, name: str) -> int:
        """The number of the latest version of ``name`` (0: none). The pointer, moved forward while the next
        number exists (a writer that died before moving it); a name without pointer is listed once."""
        pointer, etag = self._read_pointer(name)
        number = pointer
        if number is None:  # registered before the pointer existed (or it is damaged): list once
            numbers = self.version_numbers(name)
            number = numbers[-1] if numbers else 0
        while self.datastore.exists(self._version_key(name, number + 1)):
            number += 1
        if number > 0 and number != pointer:
            self._advance_pointer(name, number, (pointer, etag))
        return number

    def _read_pointer(self, name: str) -> tuple[int | None, str | None]:
        """(the pointer's version or None, its etag or None when it does not exist)."""
        try:
            current = self.datastore.get_json_with_etag(self._pointer_key(name))
        except WorkspaceError:  # not JSON: damaged, rewritten from a listing
            return None, ""
        if current is None:
            return None, None
        doc, etag = current
        number = doc.get("version") if isinstance(doc, dict) else None
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            return None, etag
        return number, etag

    def _advance_pointer(self, name: str, number: int, known: tuple[int | None, str | None] | None = None) -> None:
        """Move the pointer forward to ``number`` (an existing version), never backwards. Best effort: the
        pointer is a hint that may lag, so a lost race or a read-only store leaves it as it is."""
        key = self._pointer_key(name)
        try:
            for attempt in range(MAX_CAS_ATTEMPTS):
                pointer, etag = known if known is not None else self._read_pointer(name)
                known = None
                if pointer is not None and pointer >= number:
                    return
                if etag == "":  # damaged: overwrite (a pointer that lags is safe, one ahead never written)
                    self.datastore.put_json(key, {"version": number})
                    return
                if self.datastore.put_json_if(key, {"version": number}, etag):
                    return
                time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))  # noqa: S311 - jitter only
        except WorkspaceError:
            return

    def get(self, name: str, version: int | str = "latest") -> Version:
        if version in ("latest", None):
            version = self.latest_number(name)
            if not version:
                raise NotFoundError(self._missing(name))
        if isinstance(version, str):
            if not version.isdigit():
                raise InvalidReferenceError(f"invalid {self._singular} version {version!r}: a number or 'latest'")
            version = int(version)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidReferenceError(f"invalid {self._singular} version {version!r}: a number >= 1 or 'latest'")
        doc = self.datastore.get_json_or_none(self._version_key(name, version))
        if doc is None:
            latest = self.latest_number(name)
            if not latest:
                raise NotFoundError(self._missing(name))
            raise NotFoundError(
                f"{self._singular} {name!r} has no version {version} in {self.datastore.uri}; "
                f"versions are 1..{latest}"
            )
        return Version.from_dict(doc)

    def _missing(self, name: str) -> str:
        names = self.list_names()
        hint = f" (registered: {', '.join(names[:20])})" if names else ""
        return f"{self._singular} {name!r} is not registered in {self.datastore.uri}{hint}"

    def resolve(self, ref: str) -> Version:
        """``name`` / ``name:latest`` / ``name:3``, or ``<kind>:/name`` (the latest) / ``<kind>:/name/3`` /
        ``<kind>:/name@alias``: the grammar of ``rules.parse_registry_ref`` (a pipeline definition's).
        InvalidReferenceError when malformed, NotFoundError when the name, version or alias does not exist."""
        try:
            name, version, alias = parse_registry_ref(ref, self.kind)
        except RefSyntaxError as exc:
            raise InvalidReferenceError(f"invalid {self._singular} reference {ref!r}: {exc.detail}") from None
        if alias is not None:
            number = self.get_alias(name, alias)
            if number is None:
                raise NotFoundError(f"{self._singular} {name!r} has no alias {alias!r} in {self.datastore.uri}")
            return self.get(name, number)
        return self.get(name, version or "latest")

    def latest_digest(self, name: str) -> str | None:
        """The content digest of the latest version of ``name`` (None if it has no version)."""
        latest = self.latest_number(name)
        return self.get(name, latest).digest if latest else None

    def find_by_digest(self, name: str, digest: str) -> Version | None:
        """The version of ``name`` holding content ``digest`` (index first, then the latest version)."""
        index = self.datastore.get_json_or_none(f"{self._base(name)}/digests/{digest}.json")
        if isinstance(index, dict) and isinstance(index.get("version"), int):
            try:
                found = self.get(name, index["version"])
            except NotFoundError:
                found = None
            if found is not None and found.digest == digest:
                return found
        number = self.latest_number(name)
        if number:
            latest = self.get(name, number)
            if latest.digest == digest:
                return latest
        return None

    # -- registering
    def register(
        self,
        name: str,
        source: str | os.PathLike,
        description: str = "",
        tags: dict | None = None,
        producing_run: dict | None = None,
        extra: dict | None = None,
    ) -> Version:
        """Register ``source`` as the next version of ``name`` (or return the version that already holds
        the same content; ``is_new`` tells which). ``source``: a local path (``pathlib.Path`` or an absolute string; a file or a
        directory) or a datastore key (a relative string: a committed output prefix, a directory or a file)."""
        base = self._base(name)
        with tempfile.TemporaryDirectory(prefix="mlpipe-register-") as scratch:
            local, manifest, src_prefix = self._stage(source, pathlib.Path(scratch))
            digest = manifest["digest"]
            data_key = f"{base}/data/{digest}"
            if self._intact(data_key, digest) is None:  # else: the content is already there, intact
                if local is not None:
                    commit_output(self.datastore, local, data_key, manifest=manifest)
                else:
                    self._copy_committed(src_prefix, data_key, manifest)
            existing = self.find_by_digest(name, digest)
            if existing is not None:
                return existing
        record = {
            "kind": self.kind,
            "name": name,
            "digest": digest,
            "key": data_key,
            "uri": self.datastore.uri_for(data_key),
            "size": int(manifest["size"]),
            "files": len(manifest["files"]),
            "created": now_iso(),
            "description": description or "",
            "tags": dict(tags or {}),
            "producing_run": producing_run,
            "extra": extra,
        }
        number = self.latest_number(name) + 1
        for _ in range(MAX_CLAIM_ATTEMPTS):
            if self.datastore.create_json(self._version_key(name, number), {**record, "version": number}):
                self.datastore.create_json(f"{base}/digests/{digest}.json", {"version": number})
                self._advance_pointer(name, number)
                return dataclasses.replace(Version.from_dict({**record, "version": number}), is_new=True)
            number += 1  # another writer took it: try the next number (no listing)
        raise ConflictError(
            f"could not claim a version number for {self._singular} {name!r} after {MAX_CLAIM_ATTEMPTS} tries; "
            "too many concurrent registrations, retry later"
        )

    def _stage(self, source: Any, scratch: pathlib.Path) -> tuple[pathlib.Path | None, dict, str | None]:
        """-> (local directory to upload or None, manifest, committed datastore prefix or None)."""
        if isinstance(source, os.PathLike) or (isinstance(source, str) and os.path.isabs(source)):
            path = pathlib.Path(source)
            if path.is_dir():
                return path, build_manifest(path), None
            if path.is_file():
                return (*self._single_file(path, scratch), None)
            raise NotFoundError(f"cannot register {self._singular}: local path {str(path)!r} does not exist")
        if not isinstance(source, str):
            raise TypeError(f"source must be a path or a datastore key, not {type(source).__name__}")
        key = check_prefix(source)
        local = self.datastore.local_path(key) if key else None
        if local is not None and (local.is_dir() or local.is_file()):
            manifest = self._intact(key) if local.is_dir() else None
            if manifest is not None:
                return None, manifest, key
            return self._stage(local, scratch)  # a plain folder, or an output changed since its commit: rehash
        manifest = self._intact(key) if key else None
        if manifest is not None:
            return None, manifest, key  # a committed output: server-side copy, no rehash
        if key and self.datastore.exists(key):
            path = scratch / "download" / key.rsplit("/", 1)[-1]
            path.parent.mkdir()
            self.datastore.download_file(key, path)
            return (*self._single_file(path, scratch), None)
        target = scratch / "download"
        if not self.datastore.download_dir(key, target):
            raise NotFoundError(f"cannot register {self._singular}: {self.datastore.uri_for(key)} holds nothing")
        return target, build_manifest(target), None

    @staticmethod
    def _single_file(path: pathlib.Path, scratch: pathlib.Path) -> tuple[pathlib.Path, dict]:
        stage = scratch / "file"
        stage.mkdir(exist_ok=True)
        target = stage / path.name
        if not target.exists():
            os.symlink(path.resolve(), target)  # local_files follows file symlinks: no copy
        files = {path.name: {"size": path.stat().st_size, "sha256": hash_file(path)}}
        return stage, make_manifest(files)

    def _intact(self, prefix: str, digest: str | None = None) -> dict | None:
        """The manifest of the committed output at ``prefix`` (with ``digest``, if given) if it still holds
        its content, else None."""
        manifest = read_manifest(self.datastore, prefix)
        if manifest is None or (digest is not None and manifest["digest"] != digest):
            return None
        return None if verify_content(self.datastore, prefix, manifest) else manifest

    def _copy_committed(self, src_prefix: str, data_key: str, manifest: dict) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.datastore.delete_prefix(data_key)
        pairs = [(join_key(src_prefix, rel), join_key(data_key, rel)) for rel in manifest["files"]]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda pair: self.datastore.copy(*pair), pairs))
        seal_output(self.datastore, data_key, manifest)  # fingerprints of the copies, manifest last

    # -- aliases (models use them: production, staging...)
    def get_alias(self, name: str, alias: str) -> int | None:
        doc = self.datastore.get_json_or_none(self._alias_key(name, alias))
        return doc.get("version") if isinstance(doc, dict) else None

    def alias_record(self, name: str, alias: str) -> dict | None:
        return self.datastore.get_json_or_none(self._alias_key(name, alias))

    def list_aliases(self, name: str) -> dict[str, int]:
        prefix = f"{self._base(name)}/aliases"
        out = {}
        for info in self.datastore.list(prefix):
            alias = info.key[len(prefix) + 1 :].removesuffix(".json")
            number = self.get_alias(name, alias)
            if number is not None:
                out[alias] = number
        return out

    def set_alias(self, name: str, alias: str, version: int, reason: dict | None = None) -> dict:
        """Point ``alias`` at ``version`` (compare-and-swap, retried); returns the new alias record."""
        if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
            raise InvalidReferenceError(
                f"invalid alias {alias!r}: use letters, digits, '_' and '-', not starting with '-' "
                f"(it is written {self.kind}:/NAME@ALIAS)"
            )
        self.get(name, version)  # NotFoundError if the version does not exist
        key = self._alias_key(name, alias)
        for attempt in range(MAX_CAS_ATTEMPTS):
            current = self.datastore.get_json_with_etag(key)
            doc, etag = current if current is not None else ({}, None)
            history = list(doc.get("history") or []) if isinstance(doc, dict) else []
            history.append({"version": version, "set_at": now_iso(), "reason": reason})
            new = {"name": name, "alias": alias, "version": version, "history": history}
            if self.datastore.put_json_if(key, new, etag):
                return new
            time.sleep(random.uniform(0, 0.005 * min(attempt + 1, 20)))  # noqa: S311 - jitter only
        raise ConflictError(
            f"could not move alias {alias!r} of {self._singular} {name!r}: {MAX_CAS_ATTEMPTS} concurrent updates won; retry"
        )

    def resolve_model_ref(self, ref: str) -> Version:
        """``models:/NAME/3``, ``models:/NAME@ALIAS``, ``models:/NAME`` (the latest), and the ``NAME:3`` forms."""
        return self.resolve(ref)

    def delete_alias(self, name: str, alias: str) -> None:
        self.datastore.delete(self._alias_key(name, alias))

    # -- decisions (a compare step's verdict on a candidate version: promoted or not, against which champion)
    def _decision_key(self, name: str, version: int) -> str:
        return f"{self._base(name)}/decisions/{int(version):06d}.json"

    def decision(self, name: str, version: int) -> dict | None:
        """The last decision recorded on ``version``, or None."""
        return self.datastore.get_json_or_none(self._decision_key(name, version))

    def record_decision(self, name: str, version: int, doc: dict) -> None:
        """Record the decision on ``version`` (the last one wins: a new champion means a new question)."""
        self.datastore.put_json(self._decision_key(name, version), doc)

