from __future__ import annotations

import hashlib
import json

import pytest

from airflow_mlpipe.errors import NotFoundError
from airflow_mlpipe.workspace.manifest import (
    MANIFEST_NAME,
    build_manifest,
    canonical_json,
    commit_output,
    download_output,
    read_manifest,
    verify_output,
)

from .conftest import make_tree


def test_manifest_format(tmp_path):
    make_tree(tmp_path, {"b.txt": "bb", "a/x.json": "{}", MANIFEST_NAME: "old, reserved"})
    manifest = build_manifest(tmp_path)
    files = {
        "a/x.json": {"size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()},
        "b.txt": {"size": 2, "sha256": hashlib.sha256(b"bb").hexdigest()},
    }
    assert manifest["format"] == 1 and manifest["files"] == files and manifest["size"] == 4
    assert manifest["digest"] == hashlib.sha256(canonical_json(files)).hexdigest()
    assert canonical_json(files) == json.dumps(files, sort_keys=True, separators=(",", ":")).encode()
    assert manifest["created"].endswith("Z")


def test_commit_writes_manifest_last_and_replaces(datastore, tmp_path):
    out = make_tree(tmp_path / "out", {"model.json": '{"w": 1}', "stale.txt": "s"})
    first = commit_output(datastore, out, "outputs/p/r/s/model")
    (out / "stale.txt").unlink()
    (out / "model.json").write_text('{"w": 2}')
    second = commit_output(datastore, out, "outputs/p/r/s/model")
    assert first["digest"] != second["digest"]
    keys = [i.key for i in datastore.list("outputs/p/r/s/model")]
    assert keys == ["outputs/p/r/s/model/_manifest.json", "outputs/p/r/s/model/model.json"]
    assert read_manifest(datastore, "outputs/p/r/s/model") == second
    assert verify_output(datastore, "outputs/p/r/s/model", second["digest"])
    assert not verify_output(datastore, "outputs/p/r/s/model", first["digest"])


def test_prefix_without_manifest_is_absent(datastore, tmp_path):
    out = make_tree(tmp_path / "out", {"part-0": "x"})
    datastore.upload_dir(out, "outputs/p/r/s/half")  # files, but the step died before the manifest
    assert read_manifest(datastore, "outputs/p/r/s/half") is None
    assert not verify_output(datastore, "outputs/p/r/s/half", build_manifest(out)["digest"])
    with pytest.raises(NotFoundError, match="not a committed output"):
        download_output(datastore, "outputs/p/r/s/half", tmp_path / "dl")
    datastore.write_bytes(f"outputs/p/r/s/half/{MANIFEST_NAME}", b"not json{")
    with pytest.raises(Exception):  # noqa: B017 - a corrupt manifest is an error, not "absent"
        read_manifest(datastore, "outputs/p/r/s/half")


def test_download_output_only_manifest_files(datastore, tmp_path):
    out = make_tree(tmp_path / "out", {"a": "1", "d/b": "2"})
    manifest = commit_output(datastore, out, "outputs/x")
    datastore.write_bytes("outputs/x/stray", b"not listed")
    seen = []
    got = download_output(datastore, "outputs/x", tmp_path / "dl", progress=seen.append)
    assert got == manifest and sum(seen) == 2
    assert sorted(p.name for p in (tmp_path / "dl").rglob("*") if p.is_file()) == ["a", "b"]


def test_empty_output(datastore, tmp_path):
    (tmp_path / "empty").mkdir()
    manifest = commit_output(datastore, tmp_path / "empty", "outputs/empty")
    assert manifest["files"] == {} and manifest["size"] == 0
    assert verify_output(datastore, "outputs/empty", manifest["digest"])
