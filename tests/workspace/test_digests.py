"""The digest cache of path inputs (workspace/digests.py) and the small ``_digest.json`` beside each manifest,
on a local directory and on moto S3: same digests as a full hash, changes in place seen, damaged records
ignored, and only what changed is read (counted on a real datastore)."""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter

import pytest

from airflow_mlpipe.errors import NotFoundError
from airflow_mlpipe.workspace.cache import cache_key
from airflow_mlpipe.workspace.digests import file_digest, folder_digest, record_key
from airflow_mlpipe.workspace.manifest import (
    DIGEST_NAME,
    MANIFEST_NAME,
    commit_output,
    content_manifest,
    output_digest,
)

from .conftest import make_tree, overwrite_in_place

FOLDER = "data/raw"


def counting(datastore):
    """The same datastore (same class, same state) whose ``read_bytes`` and ``open`` count their keys."""
    base = type(datastore)

    class Counting(base):
        def read_bytes(self, key):
            self.reads[key] += 1
            return base.read_bytes(self, key)

        def open(self, key):
            self.reads[key] += 1
            return base.open(self, key)

    datastore.__class__ = Counting
    datastore.reads = Counter()
    return datastore


def content_reads(datastore) -> dict[str, int]:
    return {key: n for key, n in datastore.reads.items() if not key.startswith("cache/")}


def settle():
    time.sleep(0.05)  # past the racy margin (20 ms): the files' fingerprints may be recorded


def put_folder(datastore, tmp_path, files: dict[str, str]) -> None:
    datastore.upload_dir(make_tree(tmp_path / "src", files), FOLDER)
    settle()


def keep_mtime_overwrite(datastore, key: str, data: bytes) -> None:
    """Change a file in place with the same size; a local one keeps its mtime too (only ctime moves)."""
    local = datastore.local_path(key)
    before = os.stat(local) if local is not None else None
    overwrite_in_place(datastore, key, data)
    if before is not None:
        os.utime(local, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(local)
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


FILES = {"a.csv": "1,2\n", "b/c.csv": "3,4\n", "b/d/e.bin": "x" * 3000, "_manifest.json": "not ours"}


def test_folder_digest_is_the_full_hash_and_reads_only_what_changed(datastore, tmp_path):
    ds = counting(datastore)
    put_folder(ds, tmp_path, FILES)
    full = content_manifest(ds, FOLDER)["digest"]
    assert folder_digest(ds, FOLDER) == full
    assert ds.exists(record_key("folder", FOLDER))
    ds.reads.clear()
    assert folder_digest(ds, FOLDER) == full
    assert content_reads(ds) == {}  # second run, nothing changed: no file read

    keep_mtime_overwrite(ds, f"{FOLDER}/b/c.csv", b"9,9\n")  # same size, same mtime
    ds.reads.clear()
    changed = folder_digest(ds, FOLDER)
    assert changed != full and changed == content_manifest(ds, FOLDER)["digest"]
    assert content_reads(ds) == {f"{FOLDER}/b/c.csv": 1}


def test_added_or_removed_files_change_the_digest(datastore, tmp_path):
    ds = counting(datastore)
    put_folder(ds, tmp_path, FILES)
    first = folder_digest(ds, FOLDER)
    ds.write_bytes(f"{FOLDER}/new.csv", b"5,6\n")
    ds.reads.clear()
    added = folder_digest(ds, FOLDER)
    assert added not in (first,) and added == content_manifest(ds, FOLDER)["digest"]
    assert content_reads(ds) == {f"{FOLDER}/new.csv": 1}
    ds.delete(f"{FOLDER}/new.csv")
    ds.delete(f"{FOLDER}/a.csv")
    ds.reads.clear()
    removed = folder_digest(ds, FOLDER)
    assert removed not in (first, added) and removed == content_manifest(ds, FOLDER)["digest"]
    assert content_reads(ds) == {}
    for rel in ("b/c.csv", "b/d/e.bin", "_manifest.json"):
        ds.delete(f"{FOLDER}/{rel}")
    with pytest.raises(NotFoundError):
        folder_digest(ds, FOLDER)


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"format": 1, "kind": "folder", "key": "other"}', b"\xff\xfe"])
def test_a_damaged_digest_cache_is_ignored(datastore, tmp_path, damage):
    ds = counting(datastore)
    put_folder(ds, tmp_path, FILES)
    full = folder_digest(ds, FOLDER)
    ds.write_bytes(record_key("folder", FOLDER), damage)
    ds.reads.clear()
    assert folder_digest(ds, FOLDER) == full
    assert len(content_reads(ds)) == 3  # every content file hashed again (the top-level _manifest.json is metadata)
    ds.reads.clear()
    assert folder_digest(ds, FOLDER) == full and content_reads(ds) == {}  # and the record rewritten


def test_a_record_with_another_fingerprint_is_not_used(datastore, tmp_path):
    """A record whose fingerprint is not the file's (e.g. edited by hand) is not trusted: the file is hashed."""
    ds = counting(datastore)
    put_folder(ds, tmp_path, {"a.csv": "1"})
    full = folder_digest(ds, FOLDER)
    doc = ds.get_json(record_key("folder", FOLDER))
    doc["files"]["a.csv"] = {"fp": [1, "other"], "sha256": "0" * 64}
    ds.put_json(record_key("folder", FOLDER), doc)
    ds.reads.clear()
    assert folder_digest(ds, FOLDER) == full and content_reads(ds) == {f"{FOLDER}/a.csv": 1}


def test_a_file_changed_too_recently_is_hashed_every_time(tmp_path):
    """Local racy-clean rule: a file whose ctime is within the margin of the walk is not recorded."""
    from airflow_mlpipe.workspace.datastore import LocalDatastore

    ds = counting(LocalDatastore(tmp_path / "ws"))
    ds.write_bytes(f"{FOLDER}/a.csv", b"1")
    folder_digest(ds, FOLDER)
    doc = ds.get_json(record_key("folder", FOLDER))
    assert doc["files"] == {}  # too recent to stand for its content later
    settle()
    ds.reads.clear()
    folder_digest(ds, FOLDER)
    assert content_reads(ds) == {f"{FOLDER}/a.csv": 1}
    assert list(ds.get_json(record_key("folder", FOLDER))["files"]) == ["a.csv"]


def test_file_digest(datastore):
    ds = counting(datastore)
    key = "data/one.bin"
    ds.write_bytes(key, b"abc" * 1000)
    settle()
    assert file_digest(ds, key) == hashlib.sha256(b"abc" * 1000).hexdigest()
    ds.reads.clear()
    assert file_digest(ds, key) == hashlib.sha256(b"abc" * 1000).hexdigest() and content_reads(ds) == {}
    keep_mtime_overwrite(ds, key, b"abd" * 1000)
    assert file_digest(ds, key) == hashlib.sha256(b"abd" * 1000).hexdigest()
    assert content_reads(ds) == {key: 1}
    ds.write_bytes(record_key("file", key), b"garbage")
    assert file_digest(ds, key) == hashlib.sha256(b"abd" * 1000).hexdigest()
    with pytest.raises(NotFoundError):
        file_digest(ds, "data/missing.bin")


# ------------------------------------------------------------------------------ _digest.json of outputs
MANY = 300


def commit_many(datastore, tmp_path, prefix="outputs/p/r1/train/model"):
    out = make_tree(tmp_path / "out", {f"part-{i // 100}/f{i:04d}.json": f'{{"row": {i}}}' for i in range(MANY)})
    return prefix, commit_output(datastore, out, prefix)


def test_output_digest_reads_the_small_document(datastore, tmp_path):
    ds = counting(datastore)
    prefix, manifest = commit_many(ds, tmp_path)
    doc = ds.get_json(f"{prefix}/{DIGEST_NAME}")
    assert (doc["digest"], doc["files"], doc["size"]) == (manifest["digest"], MANY, manifest["size"])
    ds.reads.clear()
    assert output_digest(ds, prefix) == (manifest["digest"], [])
    assert dict(ds.reads) == {f"{prefix}/{DIGEST_NAME}": 1}

    overwrite_in_place(ds, f"{prefix}/part-0/f0007.json", b'{"row": 8}')  # same size
    ds.reads.clear()
    digest, problems = output_digest(ds, prefix)
    assert digest == manifest["digest"] and problems == ["file part-0/f0007.json changed since it was committed"]
    assert ds.reads[f"{prefix}/{MANIFEST_NAME}"] == 1  # the doubt is settled by the manifest

    ds.delete(f"{prefix}/{MANIFEST_NAME}")
    assert output_digest(ds, prefix)[0] is None  # no manifest, no output, whatever _digest.json says


def test_a_damaged_digest_document_falls_back_to_the_manifest(datastore, tmp_path):
    ds = counting(datastore)
    prefix, manifest = commit_many(ds, tmp_path)
    ds.write_bytes(f"{prefix}/{DIGEST_NAME}", b"{broken")
    ds.reads.clear()
    assert output_digest(ds, prefix) == (manifest["digest"], [])
    assert ds.reads[f"{prefix}/{MANIFEST_NAME}"] == 1
    doc = {"format": 1, "digest": "f" * 64, "fingerprint": ds.fingerprint_kind, "summary": "x", "manifest_size": 1}
    ds.put_json(f"{prefix}/{DIGEST_NAME}", doc)  # a summary that does not match: not trusted
    assert output_digest(ds, prefix) == (manifest["digest"], [])


def test_lookup_of_a_large_output_reads_the_digest_document_not_the_manifest(workspace, tmp_path):
    ds = counting(workspace.datastore)
    prefix, manifest = commit_many(ds, tmp_path)
    comp = {"step": {"name": "train"}, "inputs": {}}
    key = cache_key(comp)
    workspace.cache.commit(key, "p", "train", comp, {"model": {"key": prefix, "digest": manifest["digest"]}})
    ds.reads.clear()
    assert workspace.cache.lookup(key) is not None
    assert f"{prefix}/{MANIFEST_NAME}" not in ds.reads  # the entry's summary matched: nothing read below it

    entry = ds.get_json(f"cache/entries/{key}.json")
    entry["fingerprints"] = {}  # an entry without summaries (written before them)
    ds.put_json(f"cache/entries/{key}.json", entry)
    ds.reads.clear()
    assert workspace.cache.lookup(key) is not None
    assert ds.reads[f"{prefix}/{DIGEST_NAME}"] == 1 and f"{prefix}/{MANIFEST_NAME}" not in ds.reads

    overwrite_in_place(ds, f"{prefix}/part-2/f0250.json", b'{"row": 251}')
    ds.reads.clear()
    assert workspace.cache.lookup(key) is None
    assert ds.reads[f"{prefix}/{MANIFEST_NAME}"] == 1
    assert workspace.cache.explain("p", "train", comp) == [
        "output model: file part-2/f0250.json changed since it was committed"]
