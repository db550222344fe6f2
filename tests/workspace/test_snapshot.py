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


def trust_fresh_files(monkeypatch):
    """Files a test has just written have a ctime of now, which no tool can set back, so the stat cache
    would not trust them for ``_RACY_NS`` (2 s). Timestamps here have ns resolution and nothing writes
    the files behind the test's back: trust them at once, so a test can check what the cache keeps."""
    monkeypatch.setattr(snapmod, "_RACY_NS", 0)


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
    trust_fresh_files(monkeypatch)
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


def _age(path, seconds_ago: float = 3600.0) -> int:
    """Give ``path`` an mtime well in the past (not "racily clean"); return it in ns."""
    import os
    import time

    old = time.time_ns() - int(seconds_ago * 1e9)
    os.utime(path, ns=(old, old))
    return old


def test_same_size_same_mtime_edit_is_seen(tmp_path, monkeypatch):
    """A timestamp-preserving rewrite (same size, mtime set back, as rsync -t / cp -p / some editors do)
    is not served from the hash cache: the fingerprint holds the inode and ctime too."""
    import os

    from airflow_mlpipe.workspace.datastore import LocalDatastore

    ds = LocalDatastore(tmp_path / "ws")
    src = make_tree(tmp_path / "src", {"train.py": "VALUE = 1\n", "util.py": "U = 0\n"})
    for path in src.iterdir():
        _age(path)
    trust_fresh_files(monkeypatch)
    calls = []
    real = snapmod.hash_file
    monkeypatch.setattr(snapmod, "hash_file", lambda p: calls.append(p.name) or real(p))
    cache = tmp_path / "cache"
    first = snapshot_source(ds, src, git=False, cache_dir=cache)
    calls.clear()
    assert snapshot_source(ds, src, git=False, cache_dir=cache).sha256 == first.sha256
    assert calls == []  # served from the cache
    before = os.stat(src / "train.py")
    (src / "train.py").write_text("VALUE = 2\n")  # same size
    os.utime(src / "train.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(src / "train.py")
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    second = snapshot_source(ds, src, git=False, cache_dir=cache)
    assert second.sha256 != first.sha256
    assert second.files["train.py"]["sha256"] == snapmod.hash_file(src / "train.py")
    # a rename over the file (new inode) with size and mtime of the old one is seen as well
    (tmp_path / "other.py").write_text("VALUE = 3\n")
    os.utime(tmp_path / "other.py", ns=(after.st_atime_ns, after.st_mtime_ns))
    os.replace(tmp_path / "other.py", src / "train.py")
    third = snapshot_source(ds, src, git=False, cache_dir=cache)
    assert third.files["train.py"]["sha256"] == snapmod.hash_file(src / "train.py") != second.files["train.py"]["sha256"]


def test_racily_clean_files_are_not_trusted(tmp_path, monkeypatch):
    """A file whose mtime or ctime is within _RACY_NS of the scan is hashed, never remembered: an edit
    right after the hash (inside the filesystem's timestamp granularity) cannot be served stale."""
    import os

    from airflow_mlpipe.workspace.datastore import LocalDatastore

    ds = LocalDatastore(tmp_path / "ws")
    src = make_tree(tmp_path / "src", {"fresh.py": "A = 1\n", "old.py": "B = 1\n"})
    _age(src / "old.py")  # an old mtime, but its ctime is now
    calls = []
    real = snapmod.hash_file
    monkeypatch.setattr(snapmod, "hash_file", lambda p: calls.append(p.name) or real(p))
    cache = tmp_path / "cache"
    for _ in range(2):
        calls.clear()
        snapshot_source(ds, src, git=False, cache_dir=cache)
        assert sorted(calls) == ["fresh.py", "old.py"]
    assert not snapmod._StatCache(cache, src).entries
    # modified right after it was hashed, same size, mtime set back: hashed again, the new content seen
    st = os.stat(src / "old.py")
    (src / "old.py").write_text("B = 2\n")
    os.utime(src / "old.py", ns=(st.st_atime_ns, st.st_mtime_ns))
    snap = snapshot_source(ds, src, git=False, cache_dir=cache)
    assert snap.files["old.py"]["sha256"] == real(src / "old.py")


def test_trust_cache_false_rehashes_everything(tmp_path, monkeypatch):
    from airflow_mlpipe.workspace.core import Workspace
    from airflow_mlpipe.workspace.datastore import LocalDatastore

    ws = Workspace(LocalDatastore(tmp_path / "ws"))
    src = make_tree(tmp_path / "src", {f"f{i}.txt": str(i) for i in range(5)})
    trust_fresh_files(monkeypatch)
    cache = tmp_path / "cache"
    first = ws.snapshot(src, git=False, cache_dir=cache)
    calls = []
    real = snapmod.hash_file
    monkeypatch.setattr(snapmod, "hash_file", lambda p: calls.append(p.name) or real(p))
    assert ws.snapshot(src, git=False, cache_dir=cache).sha256 == first.sha256
    assert calls == []
    assert ws.snapshot(src, git=False, cache_dir=cache, trust_cache=False).sha256 == first.sha256
    assert sorted(calls) == [f"f{i}.txt" for i in range(5)]


def test_hash_cache_of_an_older_format_is_ignored(tmp_path, monkeypatch):
    import json

    from airflow_mlpipe.workspace.datastore import LocalDatastore

    ds = LocalDatastore(tmp_path / "ws")
    src = make_tree(tmp_path / "src", {"a.py": "A = 1\n"})
    mtime = _age(src / "a.py")
    trust_fresh_files(monkeypatch)
    cache = tmp_path / "cache"
    stale = snapmod._StatCache(cache, src)
    stale.path.parent.mkdir(parents=True, exist_ok=True)
    # a format-1 cache (size + mtime only) that claims an old hash for the file
    stale.path.write_text(json.dumps({"format": 1, "files": {"a.py": [6, mtime, "0" * 64]}}))
    snap = snapshot_source(ds, src, git=False, cache_dir=cache)
    assert snap.files["a.py"]["sha256"] == snapmod.hash_file(src / "a.py")


def test_symlinks_leading_out_of_the_source_folder_are_refused(tmp_path):
    import os

    outside = make_tree(tmp_path / "outside", {"secret.txt": "s", "d/x.txt": "x"})
    src = make_tree(tmp_path / "src", {"train.py": "print(1)"})
    (src / "leak.txt").symlink_to(outside / "secret.txt")
    with pytest.raises(WorkspaceError) as info:
        select_files(src)
    message = str(info.value)
    assert str(src / "leak.txt") in message and str(outside / "secret.txt") in message
    assert "outside the source directory" in message and ".amlignore" in message
    (src / "leak.txt").unlink()
    # a relative link that climbs out, and a link to a directory outside
    os.symlink("../outside/secret.txt", src / "rel.txt")
    with pytest.raises(WorkspaceError, match="rel.txt"):
        select_files(src)
    (src / "rel.txt").unlink()
    (src / "pkg").mkdir()
    (src / "pkg" / "data").symlink_to(outside / "d", target_is_directory=True)
    with pytest.raises(WorkspaceError) as info:
        select_files(src)
    assert str(src / "pkg" / "data") in str(info.value) and str(outside / "d") in str(info.value)
    # ignored, it is not part of the snapshot: no complaint
    (src / ".amlignore").write_text("pkg/data\n")
    assert rels(src) == [".amlignore", "train.py"]


def test_symlinks_inside_the_source_folder_keep_working(workspace, tmp_path):
    real = make_tree(tmp_path / "real", {"train.py": "print(1)", "lib/u.py": "U = 1", "conf/a.yaml": "a: 1"})
    (real / "u_link.py").symlink_to(real / "lib" / "u.py")  # followed: the file's content is snapshotted
    (real / "conf_link").symlink_to("conf", target_is_directory=True)  # not entered, as before
    assert rels(real) == ["conf/a.yaml", "lib/u.py", "train.py", "u_link.py"]
    # a hand-written operator may name a folder through a symlink: links are judged against its real path
    alias = tmp_path / "alias"
    alias.symlink_to(real, target_is_directory=True)
    snap = snapshot_source(workspace.datastore, alias, git=False)
    assert snap.files["u_link.py"] == snap.files["lib/u.py"]
