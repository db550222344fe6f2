"""Output manifests: what a committed output prefix holds (docs/internals.md, "Manifest").

```json
{"format": 1, "files": {"model.json": {"size": 123, "sha256": "...", "fp": [123, ...]}},
 "fingerprint": "stat", "size": 123, "digest": "sha256 of the canonical JSON of files (size, sha256)",
 "created": "ISO-8601"}
```

``canonical_json``: ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``
encoded as UTF-8. An output without its manifest does not exist; the manifest is written last.
A top-level ``_manifest.json`` or ``_digest.json`` in a local directory is metadata, never content: it is
not hashed and not uploaded (freshly computed ones replace them).

``_digest.json`` (written just before the manifest, by ``seal_output``) is the manifest without its file
list: ``{"format", "digest", "files": count, "size", "fingerprint", "summary", "manifest_size"}``, where
``summary`` is the ``fingerprint_summary`` of the content files' fingerprints (sorted by path) recorded in
the manifest. ``vouched_digest`` lets a reader that needs only the digest of an intact output read it
instead of the (possibly large) manifest; when it cannot vouch, the manifest decides as before.

Each file's ``fp`` is the store's fingerprint of the committed object, taken when it was committed
(``Datastore.fingerprints``; ``fingerprint`` names its kind: ``stat`` for a local file, ``etag`` for an
S3 object). It does not enter the digest. ``verify_content`` compares the store's current fingerprints
with them: a cheap check that the output still holds what its manifest says.

Imports only the standard library (the step runtime ships this file into python3-only images).
"""

from __future__ import annotations

import array
import datetime
import hashlib
import itertools
import json
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

from airflow_mlpipe.errors import NotFoundError, WorkspaceError
from airflow_mlpipe.workspace.datastore import Datastore, check_prefix, join_key, local_files

__all__ = [
    "DIGEST_NAME",
    "MANIFEST_NAME",
    "METADATA_NAMES",
    "build_manifest",
    "canonical_json",
    "check_output",
    "commit_output",
    "content_manifest",
    "download_output",
    "files_digest",
    "fingerprint_summary",
    "hash_file",
    "merge_outputs",
    "output_digest",
    "output_problems",
    "read_digest",
    "read_manifest",
    "seal_output",
    "verify_content",
    "verify_output",
    "vouched_digest",
]

MANIFEST_NAME = "_manifest.json"
DIGEST_NAME = "_digest.json"
#: top-level names below an output that are the store's metadata, never content
METADATA_NAMES = frozenset({MANIFEST_NAME, DIGEST_NAME})
FORMAT = 1
CHUNK = 1024 * 1024
NAMED = 3  # how many file names a reason lists before "and N more"


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
    return [(rel, path) for rel, path in local_files(local_dir) if rel not in METADATA_NAMES]


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
    """True if ``prefix`` has a manifest whose digest is ``expected_digest`` and still holds its content."""
    return not check_output(datastore, prefix, expected_digest)[1]


def _files(rels: list[str], what: str) -> list[str]:
    named = [f"file {rel} {what}" for rel in sorted(rels)[:NAMED]]
    if len(rels) > NAMED:
        named.append(f"{len(rels) - NAMED} more files {what}")
    return named


def verify_content(
    datastore: Datastore, prefix: str, manifest: dict, current: dict[str, list | None] | None = None
) -> list[str]:
    """Why the objects below ``prefix`` are no longer what ``manifest`` says ([] if they are).

    One ``datastore.fingerprints`` walk (local: a stat per file; S3: one listing), or ``current`` if given.
    A missing or an extra file is a change. A file whose fingerprint is the one recorded at commit is
    unchanged. Otherwise: a local file is rehashed and has changed only if its sha256 differs; on S3 any
    difference of size or ETag is a change. A manifest without fingerprints (written before they existed,
    or by another kind of store): local files are rehashed, S3 objects compared by size only."""
    prefix = check_prefix(prefix)
    files = manifest.get("files") or {}
    if current is None:
        current = datastore.fingerprints(prefix)
    local = datastore.fingerprint_kind == "stat"
    trusted = manifest.get("fingerprint") == datastore.fingerprint_kind
    missing: list[str] = []
    suspects: list[str] = []
    for rel, meta in files.items():
        fp = current.get(rel, False)
        if fp is False:
            missing.append(rel)
        elif fp is None or not trusted or meta.get("fp") != fp:
            suspects.append(rel)
    extra = [rel for rel in current.keys() - files.keys() if rel not in METADATA_NAMES]
    changed = []
    root = datastore.local_path(prefix) if local else None
    for rel in suspects:
        meta, fp = files[rel], current[rel]
        if fp is not None and fp[0] != meta.get("size"):
            changed.append(rel)
        elif root is not None:
            try:
                same = hash_file(root.joinpath(*rel.split("/"))) == meta.get("sha256")
            except FileNotFoundError:
                same = False
            if not same:
                changed.append(rel)
        elif trusted and meta.get("fp") is not None:
            changed.append(rel)
    return (_files(changed, "changed since it was committed") + _files(missing, "was deleted since it was committed")
            + _files(extra, "was added since it was committed"))


def check_output(
    datastore: Datastore, prefix: str, expected_digest: str | None = None, current: dict[str, list | None] | None = None
) -> tuple[dict | None, list[str]]:
    """(manifest, problems) of the committed output at ``prefix``: no manifest, a manifest whose digest is not
    ``expected_digest`` (what its producer recorded; rewritten by someone else), or ``verify_content``'s
    reasons (against ``current`` fingerprints if given). No problems: the output holds ``expected_digest``
    (or its manifest's digest)."""
    manifest = read_manifest(datastore, prefix)
    if manifest is None:
        return None, [f"it was deleted (no {MANIFEST_NAME} at {datastore.uri_for(prefix)})"]
    if expected_digest is not None and manifest["digest"] != expected_digest:
        return manifest, [f"its manifest was rewritten: it holds digest {str(manifest['digest'])[:12]}, "
                          f"the producer recorded {str(expected_digest)[:12]}"]
    return manifest, verify_content(datastore, prefix, manifest, current)


def fingerprint_summary(kind: str, fingerprints: dict[str, list | None]) -> str | None:
    """One value standing for every fingerprint below a prefix (its manifest's included): ``kind:sha256`` of
    the paths and their fingerprints, in the store's listing order (S3: by key; local: directory order, which
    changes only with the folder: a new order is a mismatch, which the exact check then clears). None if a
    fingerprint is missing (a file too recent to trust)."""
    values = list(fingerprints.values())
    if None in values:
        return None
    digest = hashlib.sha256("\0".join(fingerprints).encode("utf-8", "surrogateescape"))
    try:  # local stats are integers: packed in C, no per-file Python work
        digest.update(array.array("q", itertools.chain.from_iterable(values)).tobytes())
    except (TypeError, OverflowError):  # ETags, or an integer beyond 64 bits
        digest.update(json.dumps(values, separators=(",", ":")).encode())
    return f"{kind}:{digest.hexdigest()}"


def content_summary(kind: str, fingerprints: dict[str, list | None]) -> str | None:
    """``fingerprint_summary`` of the content files only (metadata names left out), sorted by path: the
    value ``_digest.json`` records (independent of the store's listing order)."""
    return fingerprint_summary(kind, {rel: fingerprints[rel] for rel in sorted(fingerprints)
                                      if rel not in METADATA_NAMES})


def _is_digest_doc(doc: Any) -> bool:
    return (isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("digest"), str)
            and isinstance(doc.get("fingerprint"), str) and isinstance(doc.get("manifest_size"), int)
            and isinstance(doc.get("summary"), (str, type(None))))


def read_digest(datastore: Datastore, prefix: str) -> dict | None:
    """The ``_digest.json`` of the output at ``prefix``, or None if there is none or it is not one (damaged,
    or written by something else: ignored, the manifest decides)."""
    try:
        doc = datastore.get_json_or_none(join_key(check_prefix(prefix), DIGEST_NAME))
    except WorkspaceError:
        return None
    return doc if _is_digest_doc(doc) else None


def vouched_digest(datastore: Datastore, prefix: str, current: dict[str, list | None]) -> str | None:
    """The digest ``_digest.json`` records, if the store's fingerprints ``current`` (of everything below
    ``prefix``) show the output exactly as it was sealed: the manifest present with the size it was written
    with, and the content files (no more, no fewer) with the fingerprints its manifest recorded. Else None:
    the manifest must be read (``check_output``). Reads one small object; never the manifest."""
    manifest_fp = current.get(MANIFEST_NAME)
    if not manifest_fp:
        return None
    doc = read_digest(datastore, prefix)
    if doc is None or not doc["summary"] or doc["fingerprint"] != datastore.fingerprint_kind:
        return None
    if manifest_fp[0] != doc["manifest_size"]:
        return None
    if content_summary(datastore.fingerprint_kind, current) != doc["summary"]:
        return None
    return doc["digest"]


def output_problems(datastore: Datastore, prefix: str, digest: str, summary: str | None = None) -> list[str]:
    """Why the committed output at ``prefix`` no longer holds ``digest`` ([] if it does). One walk of the
    store's fingerprints, then the first check that can decide: ``summary`` (a ``fingerprint_summary`` taken
    when the output was known to hold ``digest``, ``_manifest.json`` included) still matches: nothing below
    ``prefix`` changed, nothing is read; ``_digest.json`` vouches for ``digest`` (``vouched_digest``): one
    small read; else the manifest is read and every file compared (``check_output``)."""
    current = datastore.fingerprints(prefix)
    if summary and fingerprint_summary(datastore.fingerprint_kind, current) == summary:
        return []
    if vouched_digest(datastore, prefix, current) == digest:
        return []
    return check_output(datastore, prefix, digest, current)[1]


def output_digest(datastore: Datastore, prefix: str) -> tuple[str | None, list[str]]:
    """(digest its manifest records, problems) of the committed output at ``prefix`` ((None, [why]) if it
    has no manifest). No problems: its files still hold that digest. Reads ``_digest.json`` when it vouches
    for the files (``vouched_digest``), else the manifest (``check_output``); one walk either way."""
    current = datastore.fingerprints(prefix)
    vouched = vouched_digest(datastore, prefix, current)
    if vouched is not None:
        return vouched, []
    manifest, problems = check_output(datastore, prefix, None, current)
    return (manifest["digest"] if manifest is not None else None), problems


def content_manifest(datastore: Datastore, prefix: str) -> dict:
    """The manifest of what is really below ``prefix`` (every object but the top-level metadata,
    ``_manifest.json`` and ``_digest.json``, each one hashed): the content identity of a folder without manifest, or of an output whose content no
    longer matches its manifest. Raises NotFoundError if ``prefix`` holds nothing."""
    prefix = check_prefix(prefix)
    local = datastore.local_path(prefix) if datastore.fingerprint_kind == "stat" else None
    if local is not None:
        rels = [rel for rel in datastore.fingerprints(prefix) if rel not in METADATA_NAMES]
        if not rels:
            raise NotFoundError(f"nothing at {datastore.uri_for(prefix)}")
        return build_manifest(local, [(rel, local.joinpath(*rel.split("/"))) for rel in sorted(rels)])
    with tempfile.TemporaryDirectory(prefix="mlpipe-content-") as scratch:
        if not datastore.download_dir(prefix, scratch):
            raise NotFoundError(f"nothing at {datastore.uri_for(prefix)}")
        return build_manifest(scratch)


def seal_output(datastore: Datastore, prefix: str, manifest: dict, fence: Callable[[], None] | None = None) -> dict:
    """Record the store's fingerprint of each file of ``manifest`` (now at ``prefix``), write ``_digest.json``
    (its digest and fingerprint summary), then the manifest, LAST. Returns the manifest as written. Raises WorkspaceError if ``prefix`` does not hold exactly the
    manifest's files with their sizes (someone wrote there during the commit). ``fence`` is called right
    before the manifest is written (see ``commit_output``)."""
    prefix = check_prefix(prefix)
    current = datastore.fingerprints(prefix, settle=True)
    for name in METADATA_NAMES:
        current.pop(name, None)
    files = {}
    for rel, meta in sorted(manifest["files"].items()):
        fp = current.get(rel, False)
        if fp is False or (fp is not None and fp[0] != int(meta["size"])):
            raise WorkspaceError(f"{datastore.uri_for(join_key(prefix, rel))} changed while it was being committed; commit again")
        files[rel] = {"size": int(meta["size"]), "sha256": meta["sha256"], **({"fp": fp} if fp is not None else {})}
    if len(current) != len(files):
        extra = sorted(set(current) - set(files))
        raise WorkspaceError(f"{datastore.uri_for(prefix)} gained {extra[:NAMED]} while it was being committed; commit again")
    sealed = {**manifest, "files": files, "fingerprint": datastore.fingerprint_kind}
    data = json.dumps(sealed, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    summary = {"format": FORMAT, "digest": sealed["digest"], "files": len(files), "size": sealed.get("size"),
               "fingerprint": datastore.fingerprint_kind, "summary": content_summary(datastore.fingerprint_kind, current),
               "manifest_size": len(data)}
    datastore.write_bytes(join_key(prefix, DIGEST_NAME), json.dumps(summary, sort_keys=True).encode() + b"\n")
    if fence is not None:
        fence()
    datastore.write_bytes(join_key(prefix, MANIFEST_NAME), data)
    return sealed


def merge_outputs(datastore: Datastore, dest: str, parts: list[tuple[str, str]]) -> dict:
    """Merge committed outputs into one output at ``dest``: part N's files under ``pNNNNN/`` (the partitions
    of a ``batch_score`` step), copied server-side, its manifest written last. ``parts`` is ``[(key, digest
    the part committed)]``; a part whose files no longer hold what it committed is refused (ValueError naming
    the part and the change), before anything is written. Returns the merged output's manifest."""
    checked = []
    for index, (key, digest) in enumerate(parts):
        manifest, problems = check_output(datastore, key, digest)
        if problems or manifest is None:
            raise ValueError(f"part {index} at {datastore.uri_for(key)} no longer holds what it committed: "
                             f"{'; '.join(problems) or 'no manifest'}")
        checked.append((key, manifest))
    datastore.delete_prefix(dest)
    files: dict[str, dict] = {}
    for index, (key, manifest) in enumerate(checked):
        for path, meta in manifest["files"].items():
            target = f"p{index:05d}/{path}"
            datastore.copy(f"{key}/{path}", f"{dest}/{target}")
            files[target] = meta
    return seal_output(datastore, dest, make_manifest(files))  # last: the merged output exists from here on


def commit_output(
    datastore: Datastore,
    local_dir: str | pathlib.Path,
    prefix: str,
    progress: Callable[[int], None] | None = None,
    manifest: dict | None = None,
    fence: Callable[[], None] | None = None,
) -> dict:
    """Publish ``local_dir`` at ``prefix``: delete what the prefix held (its manifest with it: the output is
    "absent" until the end), upload every file, record their fingerprints (``seal_output``), then write the
    manifest LAST. Returns the manifest. ``manifest`` (from ``build_manifest``) skips rehashing.
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
    return seal_output(datastore, prefix, manifest, fence)


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
