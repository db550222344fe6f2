"""Output manifests: what a committed output prefix holds (docs/internals.md, "Manifest").

```json
{"format": 1, "files": {"model.json": {"size": 123, "sha256": "..."}},
 "size": 123, "digest": "sha256 of the canonical JSON of files", "created": "ISO-8601"}
```

``canonical_json``: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
encoded as UTF-8. An output without its manifest does not exist; the manifest is written last.
A top-level ``_manifest.json`` in a local directory is metadata, never content: it is not hashed
and not uploaded (a freshly computed one replaces it).

Imports only the standard library (the step runtime ships this file into python3-only images).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import pathlib
from collections.abc import Callable
from typing import Any

from airflow_mlpipe.errors import NotFoundError, WorkspaceError
from airflow_mlpipe.workspace.datastore import Datastore, check_prefix, join_key, local_files

__all__ = [
    "MANIFEST_NAME",
    "build_manifest",
    "canonical_json",
    "commit_output",
    "download_output",
    "files_digest",
    "hash_file",
    "read_manifest",
    "verify_output",
]

MANIFEST_NAME = "_manifest.json"
FORMAT = 1
CHUNK = 1024 * 1024


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode("utf-8")


def hash_file(path: str | pathlib.Path) -> str:
    """sha256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(files: dict[str, dict]) -> str:
    """The digest of a manifest's ``files`` map: sha256 of its canonical JSON (only size and sha256 count)."""
    normal = {path: {"size": int(meta["size"]), "sha256": meta["sha256"]} for path, meta in files.items()}
    return hashlib.sha256(canonical_json(normal)).hexdigest()


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_manifest(files: dict[str, dict]) -> dict:
    return {
        "format": FORMAT,
        "files": {path: {"size": int(m["size"]), "sha256": m["sha256"]} for path, m in sorted(files.items())},
        "size": sum(int(m["size"]) for m in files.values()),
        "digest": files_digest(files),
        "created": now_iso(),
    }


def _content_files(local_dir: str | pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    return [(rel, path) for rel, path in local_files(local_dir) if rel != MANIFEST_NAME]


def build_manifest(local_dir: str | pathlib.Path, content: list[tuple[str, pathlib.Path]] | None = None) -> dict:
    """The manifest of every file below ``local_dir`` (hashing each one)."""
    if content is None:
        content = _content_files(local_dir)
    return make_manifest({rel: {"size": path.stat().st_size, "sha256": hash_file(path)} for rel, path in content})


def read_manifest(datastore: Datastore, prefix: str) -> dict | None:
    """The manifest of a committed output, or None if ``prefix`` holds no (valid) manifest."""
    doc = datastore.get_json_or_none(join_key(check_prefix(prefix), MANIFEST_NAME))
    if not isinstance(doc, dict) or "digest" not in doc or not isinstance(doc.get("files"), dict):
        return None
    return doc


def verify_output(datastore: Datastore, prefix: str, expected_digest: str) -> bool:
    """True if ``prefix`` has a manifest whose digest is ``expected_digest`` (content is not rehashed)."""
    manifest = read_manifest(datastore, prefix)
    return manifest is not None and manifest.get("digest") == expected_digest


def commit_output(
    datastore: Datastore,
    local_dir: str | pathlib.Path,
    prefix: str,
    progress: Callable[[int], None] | None = None,
    manifest: dict | None = None,
    fence: Callable[[], None] | None = None,
) -> dict:
    """Publish ``local_dir`` at ``prefix``: delete what the prefix held (its manifest
    with it: the output is "absent" until the end), upload every file, then write the manifest LAST. Returns the manifest. ``manifest`` (from ``build_manifest``) skips rehashing.
    ``fence`` (e.g. the attempt's lease check) is called before anything is deleted and right before the
    manifest is written; whatever it raises stops the commit, with the output left absent."""
    prefix = check_prefix(prefix)
    if not prefix:
        raise ValueError("commit_output needs a non-empty prefix")
    content = _content_files(local_dir)
    if manifest is None:
        manifest = build_manifest(local_dir, content)
    elif [rel for rel, _ in content] != sorted(manifest["files"]):
        raise WorkspaceError(f"{local_dir} changed after its manifest was built; commit it again")
    items = [(path, join_key(prefix, rel)) for rel, path in content]
    if fence is not None:
        fence()
    datastore.delete(join_key(prefix, MANIFEST_NAME))  # absent from here on, even if the next step dies
    datastore.delete_prefix(prefix)
    datastore.upload_many(items, progress)
    if fence is not None:
        fence()
    datastore.put_json(join_key(prefix, MANIFEST_NAME), manifest)
    return manifest


def download_output(
    datastore: Datastore,
    prefix: str,
    local_dir: str | pathlib.Path,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Download the files a committed output's manifest lists (stray objects are ignored) into
    ``local_dir``; returns the manifest. Raises NotFoundError if ``prefix`` has no manifest."""
    prefix = check_prefix(prefix)
    manifest = read_manifest(datastore, prefix)
    if manifest is None:
        raise NotFoundError(
            f"{datastore.uri_for(prefix)} is not a committed output (no {MANIFEST_NAME}); "
            "the step that writes it has not succeeded yet"
        )
    dest = pathlib.Path(local_dir)
    dest.mkdir(parents=True, exist_ok=True)
    items = [(join_key(prefix, rel), dest.joinpath(*rel.split("/"))) for rel in manifest["files"]]
    datastore.download_many(items, progress)
    return manifest
