"""Digests of workspace paths without a manifest, each file hashed once per content change.

```
cache/digests/<sha256 of "folder:<key>" or "file:<key>">.json
  {"format": 1, "kind": "folder" | "file", "key": key, "fingerprint": "stat" | "etag",
   "files": {relative path ("" for a file): {"fp": fingerprint, "sha256": hex}}}
```

``folder_digest(datastore, prefix)`` is exactly ``content_manifest(datastore, prefix)["digest"]`` (the same
``files_digest`` of the same ``{path: {size, sha256}}``), and ``file_digest`` the sha256 of the object's
bytes; they only avoid reading a file whose store signal is the one recorded when it was last hashed:

- local: ``[size, mtime_ns, inode, ctime_ns]``, recorded only for a file whose ctime was more than
  ``RACY_MARGIN_NS`` before the stat walk started (racy-clean: any later change gets a newer ctime, so a file
  rewritten in place with the same size and mtime is seen); a more recent file is hashed every time.
- S3: ``[size, ETag]`` from one paginated listing (a HEAD for a single file); the ETag changes with the
  content. Changed and new files are fetched on a thread pool.

A digest-cache document that cannot be read or is not one is ignored (everything is hashed and the
document rewritten); a record whose fingerprint differs is never used. Failing to write the document is
logged and costs only the next run's time. Imports only the standard library.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from typing import Any

from airflow_mlpipe.errors import NotFoundError, WorkspaceError
from airflow_mlpipe.workspace.datastore import RACY_MARGIN_NS, Datastore, check_key, check_prefix, join_key
from airflow_mlpipe.workspace.manifest import CHUNK, METADATA_NAMES, files_digest

__all__ = ["DIGESTS_PREFIX", "file_digest", "folder_digest", "hash_object"]

DIGESTS_PREFIX = "cache/digests"
FORMAT = 1
WORKERS = 8  # parallel GETs for an object store
_SHA256 = re.compile("[0-9a-f]{64}")
_log = logging.getLogger(__name__)


def hash_object(datastore: Datastore, key: str) -> tuple[str, int]:
    """(sha256 hex, size) of the bytes of object ``key``, read in chunks through ``datastore.open``."""
    digest = hashlib.sha256()
    size = 0
    with datastore.open(key) as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def record_key(kind: str, key: str) -> str:
    """Where the digest cache of a ``folder`` or a ``file`` at ``key`` lives."""
    return f"{DIGESTS_PREFIX}/{hashlib.sha256(f'{kind}:{key}'.encode()).hexdigest()}.json"


def _trusted(datastore: Datastore, fp: list | None, started: int) -> list | None:
    """``fp`` if it may stand for the file's content later, else None (a local file changed too recently)."""
    if not fp or any(value is None for value in fp):
        return None
    if datastore.fingerprint_kind == "stat" and started - int(fp[3]) <= RACY_MARGIN_NS:
        return None
    return fp


def _is_record(meta: Any) -> bool:
    """A record's sha256 is 64 lowercase hex digits (its ``fp`` is only ever compared for equality)."""
    sha = meta.get("sha256") if isinstance(meta, dict) else None
    return isinstance(sha, str) and _SHA256.fullmatch(sha) is not None and "fp" in meta


def _load(datastore: Datastore, where: str, kind: str, key: str) -> dict[str, dict]:
    """The valid records of the digest-cache document at ``where`` ({} if absent, damaged or not ours)."""
    try:
        doc = json.loads(datastore.read_bytes(where))
    except NotFoundError:
        return {}
    except (WorkspaceError, ValueError, UnicodeDecodeError) as exc:
        _log.info("digest cache %s ignored (%s); hashing again", datastore.uri_for(where), exc)
        return {}
    if not (isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("kind") == kind
            and doc.get("key") == key and doc.get("fingerprint") == datastore.fingerprint_kind
            and isinstance(doc.get("files"), dict)):
        _log.info("digest cache %s ignored (not a %s record of %s); hashing again", datastore.uri_for(where), kind, key)
        return {}
    return {rel: meta for rel, meta in doc["files"].items() if isinstance(rel, str) and _is_record(meta)}


def _save(datastore: Datastore, where: str, kind: str, key: str, records: dict[str, dict]) -> None:
    doc = {"format": FORMAT, "kind": kind, "key": key, "fingerprint": datastore.fingerprint_kind, "files": records}
    try:
        datastore.write_bytes(where, json.dumps(doc, sort_keys=True, separators=(",", ":")).encode() + b"\n")
    except WorkspaceError as exc:  # a read-only workspace: correct, only slower next time
        _log.warning("cannot write the digest cache %s (%s); the next run hashes again", datastore.uri_for(where), exc)


def _hash_all(datastore: Datastore, keys: list[str]) -> list[tuple[str, int]]:
    if len(keys) < 2 or datastore.fingerprint_kind == "stat":  # local reads: no gain from threads
        return [hash_object(datastore, key) for key in keys]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(WORKERS, len(keys))) as pool:
        return list(pool.map(lambda key: hash_object(datastore, key), keys))


def folder_digest(datastore: Datastore, prefix: str) -> str:
    """``content_manifest(datastore, prefix)["digest"]``, hashing only the files whose store signal is not
    the one recorded in the digest cache (module docstring). NotFoundError if ``prefix`` holds nothing."""
    prefix = check_prefix(prefix)
    started = time.time_ns()
    current = {rel: fp for rel, fp in datastore.fingerprints(prefix).items() if rel not in METADATA_NAMES}
    if not current:
        raise NotFoundError(f"nothing at {datastore.uri_for(prefix)}")
    where = record_key("folder", prefix)
    known = _load(datastore, where, "folder", prefix)
    files: dict[str, dict] = {}
    records: dict[str, dict] = {}
    todo: list[str] = []
    for rel, fp in current.items():
        trusted = _trusted(datastore, fp, started)
        meta = known.get(rel)
        if trusted is not None and meta is not None and meta["fp"] == trusted:
            files[rel] = {"size": int(trusted[0]), "sha256": meta["sha256"]}
            records[rel] = meta
        else:
            todo.append(rel)
    for rel, (sha, size) in zip(todo, _hash_all(datastore, [join_key(prefix, rel) for rel in todo])):
        files[rel] = {"size": size, "sha256": sha}
        trusted = _trusted(datastore, current[rel], started)
        if trusted is not None and int(trusted[0]) == size:  # a size that moved while reading: not recorded
            records[rel] = {"fp": trusted, "sha256": sha}
    if todo or records.keys() != known.keys():
        _save(datastore, where, "folder", prefix, records)
    return files_digest(files)


def file_digest(datastore: Datastore, key: str) -> str:
    """sha256 of the bytes of the object ``key``, read only if its store signal is not the one recorded in
    the digest cache. NotFoundError if there is no such object."""
    key = check_key(key)
    started = time.time_ns()
    trusted = _trusted(datastore, datastore.fingerprint(key), started)
    where = record_key("file", key)
    meta = _load(datastore, where, "file", key).get("")
    if trusted is not None and meta is not None and meta["fp"] == trusted:
        return meta["sha256"]
    sha, size = hash_object(datastore, key)
    if trusted is not None and int(trusted[0]) == size:
        _save(datastore, where, "file", key, {"": {"fp": trusted, "sha256": sha}})
    return sha
