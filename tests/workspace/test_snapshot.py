from __future__ import annotations

import io
import shutil
import subprocess
import tarfile

import pytest

from airflow_mlpipe.errors import DefinitionError, WorkspaceError
from airflow_mlpipe.workspace import snapshot as snapmod
from airflow_mlpipe.workspace.snapshot import select_files, snapshot_source, unpack_snapshot

from .conftest import make_tree


def rels(root):
    return [rel for rel, _ in select_files(root)]


def test_gitignore_and_always_ignored(tmp_path):
    make_tree(tmp_path, {
        ".gitignore": "*.log\nbuild/\n!keep.log\n",
        "train.py": "print(1)", "run.log": "x", "keep.log": "k", "build/out.o": "o",
        "src/util.py": "u", "src/cache.pyc": "c", "src/__pycache__/u.cpython.pyc": "c", ".git/HEAD": "ref",
        "src/nested/.gitignore": "secret.txt\n", "src/nested/secret.txt": "s", "src/nested/ok.txt": "ok",
        "src/nested/deeper/secret.txt": "s2",
    })
    assert rels(tmp_path) == [
        ".gitignore", "keep.log", "src/nested/.gitignore", "src/nested/ok.txt", "src/util.py", "train.py",
    ]


def test_amlignore_beats_gitignore(tmp_path):
    make_tree(tmp_path, {".gitignore": "data/\n", ".amlignore": "*.csv\n", "data/a.txt": "a", "x.csv": "1", "t.py": ""})
    assert rels(tmp_path) == [".amlignore", ".gitignore", "data/a.txt", "t.py"]


def test_snapshot_unchanged_source_not_reuploaded(workspace, tmp_path):
    src = make_tree(tmp_path / "src", {"train.py": "print('hi')", "lib/u.py": "X = 1", "notes.log": "n", ".gitignore": "*.log\n"})
    first = snapshot_source(workspace.datastore, src, git=False)
    assert first.uploaded and first.key == f"snapshots/{first.sha256}.tar.gz" and first.sha256 == first.content_sha256
    assert sorted(first.files) == [".gitignore", "lib/u.py", "train.py"]
    sidecar = workspace.datastore.get_json(f"snapshots/{first.sha256}.json")
    assert sidecar["files"] == first.files
    second = snapshot_source(workspace.datastore, src, git=False)
    assert not second.uploaded and second.sha256 == first.sha256
    (src / "notes.log").write_text("ignored change")
    assert snapshot_source(workspace.datastore, src, git=False).sha256 == first.sha256
    (src / "lib/u.py").write_text("X = 2")
    third = snapshot_source(workspace.datastore, src, git=False)
    assert third.uploaded and third.sha256 != first.sha256
    assert len([i for i in workspace.datastore.list("snapshots") if i.key.endswith(".tar.gz")]) == 2


def test_snapshot_is_deterministic_and_unpacks(workspace, tmp_path):
    files = {"train.py": "print(1)", "pkg/a.py": "A", "pkg/data/x.bin": bytes(range(256))}
    a = make_tree(tmp_path / "a", files)
    b = make_tree(tmp_path / "b", files)
    sa = snapshot_source(workspace.datastore, a, git=False, cache_dir=tmp_path / "c1")
    archive_a = workspace.datastore.read_bytes(sa.key)
    workspace.datastore.delete(sa.key)
    sb = snapshot_source(workspace.datastore, b, git=False, cache_dir=tmp_path / "c2")
    assert sb.sha256 == sa.sha256 and workspace.datastore.read_bytes(sb.key) == archive_a
    dest = tmp_path / "unpacked"
    names = unpack_snapshot(workspace.datastore, sb.key, dest)
    assert sorted(names) == sorted(files)
    assert (dest / "pkg/data/x.bin").read_bytes() == bytes(range(256))
    with tarfile.open(fileobj=io.BytesIO(archive_a)) as tar:
        assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in tar.getmembers())
        assert tar.getnames() == sorted(files)


def test_hash_paths(workspace, tmp_path):
    src = make_tree(tmp_path / "src", {"train.py": "t", "src/m.py": "m", "README.md": "r"})
    s1 = snapshot_source(workspace.datastore, src, hash_paths=["src/", "train.py"], git=False)
    assert s1.hashed_files == ("src/m.py", "train.py") and s1.sha256 != s1.content_sha256
    assert sorted(workspace.datastore.get_json(f"snapshots/{s1.sha256}.json")["files"]) == ["src/m.py", "train.py"]
    (src / "README.md").write_text("changed docs")
    s2 = snapshot_source(workspace.datastore, src, hash_paths=["src/", "train.py"], git=False)
    assert s2.sha256 == s1.sha256  # outside hash_paths: same identity ...
    assert s2.key != s1.key and s2.uploaded  # ... but the archive carries the new file
    (src / "src/m.py").write_text("m2")
    assert snapshot_source(workspace.datastore, src, hash_paths=["src/", "train.py"], git=False).sha256 != s1.sha256
    with pytest.raises(DefinitionError, match="match no file") as refused:  # the user's to fix: no retry
        snapshot_source(workspace.datastore, src, hash_paths=["nothing/"], git=False)
    assert refused.value.permanent


def test_stat_cache_avoids_rehashing(tmp_path, monkeypatch):
    from airflow_mlpipe.workspace.datastore import LocalDatastore

    ds = LocalDatastore(tmp_path / "ws")
    src = make_tree(tmp_path / "src", {f"f{i}.txt": str(i) for i in range(20)})
    old = 1_600_000_000
    for path in src.iterdir():  # old mtimes: not "racily clean"
        import os

        os.utime(path, (old, old))
    calls = []
    real = snapmod.hash_file
    monkeypatch.setattr(snapmod, "hash_file", lambda p: calls.append(p) or real(p))
    first = snapshot_source(ds, src, git=False, cache_dir=tmp_path / "cache")
    assert len(calls) == 20
    calls.clear()
    assert snapshot_source(ds, src, git=False, cache_dir=tmp_path / "cache").sha256 == first.sha256
    assert calls == []
    (src / "f3.txt").write_text("changed")
    third = snapshot_source(ds, src, git=False, cache_dir=tmp_path / "cache")
    assert [p.name for p in calls] == ["f3.txt"] and third.sha256 != first.sha256


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_info(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    src = make_tree(tmp_path / "repo", {"train.py": "print(1)"})
    run = lambda *a: subprocess.run(["git", *a], cwd=src, check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("-c", "user.name=t", "-c", "user.email=t@e", "add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "init")
    snap = snapshot_source(workspace.datastore, src)
    assert snap.git["branch"] == "main" and len(snap.git["commit"]) == 40 and snap.git["dirty"] is False
    (src / "train.py").write_text("print(2)")
    assert snapshot_source(workspace.datastore, src).git["dirty"] is True
    plain = make_tree(tmp_path / "plain", {"a.py": ""})
    assert snapshot_source(workspace.datastore, plain).git is None


def test_unpack_refuses_escaping_members(workspace, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    workspace.datastore.write_bytes("snapshots/evil.tar.gz", buf.getvalue())
    with pytest.raises(WorkspaceError):
        unpack_snapshot(workspace.datastore, "snapshots/evil.tar.gz", tmp_path / "dest")
    assert not (tmp_path / "evil.txt").exists()


def test_empty_source_is_an_error(workspace, tmp_path):
    make_tree(tmp_path / "s", {".amlignore": "*\n"})
    with pytest.raises(DefinitionError, match="no file") as refused:
        snapshot_source(workspace.datastore, tmp_path / "s", git=False)
    assert refused.value.permanent
