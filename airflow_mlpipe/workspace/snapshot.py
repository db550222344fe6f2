"""Content-addressed source snapshots (docs/internals.md: ``snapshots/<sha256>.tar.gz`` + ``.json``).

File selection: in each directory, ``.amlignore`` if present, else ``.gitignore`` (gitignore semantics,
nested files apply below their directory, deeper files win); ``.git/``, ``__pycache__/`` and ``*.pyc``
are always left out. Symlinks to files inside the source directory are followed; symlinked
directories are not entered. A symlink that leads out of the source directory (file or directory,
judged on real paths) is refused unless ignored: a snapshot holds the folder's own files only.

Two hashes:
- ``content_sha256`` over every selected file: names the archive ``snapshots/<content_sha256>.tar.gz``
  and its sidecar ``snapshots/<content_sha256>.json``;
- ``sha256`` over the files that ``hash_paths`` (gitignore-style patterns) select - all files when
  ``hash_paths`` is None, and then the two are equal. ``sha256`` is what the step cache key uses
  (``components["snapshot"] = snapshot.sha256``); when it differs from ``content_sha256`` a second
  sidecar ``snapshots/<sha256>.json`` lists the hashed files, so a cache miss can be explained file by file.
Each hash is sha256 over the sorted lines ``"<relative path>\\0<file sha256>\\n"``.

Speed: a stat cache (relative path -> fingerprint, sha256) per source directory, kept under
``$MLPIPE_CACHE_DIR/hashcache`` (default ``~/.cache/airflow_mlpipe/hashcache``), avoids rehashing
unchanged files; the archive is built only when ``snapshots/<content_sha256>.tar.gz`` is absent.
The fingerprint is (size, mtime_ns, inode, ctime_ns): size and mtime alone miss a same-size edit whose
mtime was set back (``rsync -t``, ``cp -p``, ``touch -r``...), but no user tool can set ctime back, and
a rename over the file changes the inode. As in git, a file whose mtime or ctime is within ``_RACY_NS``
of the scan ("racily clean": it may change again within the filesystem's timestamp granularity without
a visible change) is hashed but not remembered, so it is hashed again next time. ``trust_cache=False``
(``regenerate_outputs``) hashes every file and refreshes the cache.
Archives are deterministic: sorted members, mtime 0, uid/gid 0, mode 0644, gzip mtime 0.

Imports only the standard library at import time (pathspec when selecting files; ``unpack_snapshot``
needs nothing else). Extraction is ``rules.extract_tar``, which the step runtime uses too.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import pathlib
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from typing import Any

from airflow_mlpipe.errors import DefinitionError, NotFoundError, WorkspaceError
from airflow_mlpipe.rules import ArchiveError
from airflow_mlpipe.workspace.datastore import Datastore, extract_archive
from airflow_mlpipe.workspace.manifest import hash_file, now_iso

__all__ = ["Snapshot", "select_files", "snapshot_source", "tree_hash", "unpack_snapshot"]

ALWAYS_IGNORED_DIRS = {".git", "__pycache__"}
IGNORE_FILES = (".amlignore", ".gitignore")
_RACY_NS = 2_000_000_000  # files modified this close to the scan are not trusted to the stat cache
_CACHE_FORMAT = 2  # 1: [size, mtime_ns, sha256] (could not see a same-size edit with its mtime set back)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    sha256: str  # identity for the cache key (hash_paths honoured)
    key: str  # snapshots/<content_sha256>.tar.gz
    files: dict[str, dict]  # every selected file: {path: {size, sha256}}
    git: dict | None  # {commit, branch, dirty} or None outside a git work tree
    uploaded: bool  # False when the archive was already in the datastore
    content_sha256: str = ""
    hashed_files: tuple[str, ...] = ()  # the files in ``sha256`` (all of them without hash_paths)

    @property
    def sidecar_key(self) -> str:
        return f"snapshots/{self.content_sha256}.json"

    def context(self) -> dict:
        """The ``snapshot`` entry of the launch context."""
        return {"key": self.key, "sha256": self.content_sha256}


def _spec(lines: Iterable[str]) -> Any:
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(lines)


def select_files(source_dir: str | pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """The files of ``source_dir`` a snapshot holds, as sorted (relative posix path, path) pairs."""
    root = pathlib.Path(source_dir)
    if not root.is_dir():
        raise NotFoundError(f"source directory {str(root)!r} does not exist")
    specs: dict[str, Any] = {}  # dir rel ('' for root) -> spec of its ignore file

    def ignored(rel: str, is_dir: bool) -> bool:
        verdict = False
        parts = rel.split("/")
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            spec = specs.get(base)
            if spec is None:
                continue
            sub = "/".join(parts[depth:]) + ("/" if is_dir else "")
            result = spec.check_file(sub)
            if result.include is not None:
                verdict = result.include
        return verdict

    real_root = os.path.realpath(root)

    def check_link(path: pathlib.Path) -> None:
        """Refuse a symlink whose target (followed to the end) is not inside the source directory."""
        target = os.path.realpath(path)
        if os.path.commonpath([real_root, target]) != real_root:
            raise WorkspaceError(
                f"symbolic link {str(path)!r} in source directory {str(root)!r} leads to {target!r}, outside "
                "the source directory: a snapshot holds the folder's own files only. Copy what the step needs "
                "into the folder, pass it as an input, or list the link in .amlignore"
            )

    selected = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = pathlib.Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir
        for name in IGNORE_FILES:
            if name in filenames:
                try:
                    specs[rel_dir] = _spec((here / name).read_text(encoding="utf-8", errors="replace").splitlines())
                except OSError as exc:
                    raise WorkspaceError(f"cannot read {here / name}: {exc}") from exc
                break
        prefix = f"{rel_dir}/" if rel_dir else ""
        dirnames[:] = sorted(
            d for d in dirnames if d not in ALWAYS_IGNORED_DIRS and not ignored(prefix + d, True)
        )
        for d in dirnames:  # os.walk does not enter symlinked directories; one that leads out is refused
            if os.path.islink(here / d):
                check_link(here / d)
        for name in filenames:
            if name.endswith(".pyc") or ignored(prefix + name, False):
                continue
            path = here / name
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue  # vanished since the listing
            if stat.S_ISLNK(mode):
                check_link(path)
                if path.is_file():
                    selected.append((prefix + name, path))
            elif stat.S_ISREG(mode):
                selected.append((prefix + name, path))
    selected.sort(key=lambda item: item[0])
    return selected


def tree_hash(files: dict[str, str]) -> str:
    """sha256 over sorted ``"<path>\\0<sha256>\\n"`` lines of a {path: sha256} map."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path}\0{files[path]}\n".encode())
    return digest.hexdigest()


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("MLPIPE_CACHE_DIR")
    root = pathlib.Path(base) if base else pathlib.Path.home() / ".cache" / "airflow_mlpipe"
    return root / "hashcache"


class _StatCache:
    def __init__(self, cache_dir: pathlib.Path, source_dir: pathlib.Path):
        name = hashlib.sha256(str(source_dir.resolve()).encode()).hexdigest()[:32]
        self.path = cache_dir / f"{name}.json"
        self.entries: dict[str, list] = {}
        self.dirty = False
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("format") == _CACHE_FORMAT and isinstance(doc.get("files"), dict):
                self.entries = doc["files"]
        except (OSError, ValueError, AttributeError):
            self.entries = {}

    def save(self, keep: set[str]) -> None:
        stale = set(self.entries) - keep
        for rel in stale:
            del self.entries[rel]
        if not (self.dirty or stale):
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"format": _CACHE_FORMAT, "files": self.entries}, fh, separators=(",", ":"))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a cache that cannot be written only costs time


def _fingerprint(st: os.stat_result) -> list[int]:
    """What the stat cache compares: [size, mtime_ns, inode, ctime_ns]."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _hash_files(
    pairs: list[tuple[str, pathlib.Path]], cache: _StatCache | None, trust_cache: bool = True
) -> dict[str, dict]:
    """{rel: {size, sha256}}; files whose fingerprint the cache knows are not read (unless not ``trust_cache``)."""
    from concurrent.futures import ThreadPoolExecutor

    scan_ns = time.time_ns()  # taken before any stat: a change after it gets a later ctime
    out: dict[str, dict] = {}
    todo: list[tuple[str, pathlib.Path, os.stat_result]] = []
    for rel, path in pairs:
        st = path.stat()
        hit = cache.entries.get(rel) if cache is not None and trust_cache else None
        if hit and len(hit) == 5 and hit[:4] == _fingerprint(st):
            out[rel] = {"size": st.st_size, "sha256": hit[4]}
        else:
            todo.append((rel, path, st))
    if todo:
        with ThreadPoolExecutor(max_workers=min(4, len(todo))) as pool:  # hashlib releases the GIL
            digests = list(pool.map(lambda item: hash_file(item[1]), todo))
        for (rel, _, st), sha in zip(todo, digests, strict=True):
            out[rel] = {"size": st.st_size, "sha256": sha}
            if cache is None:
                continue
            if max(st.st_mtime_ns, st.st_ctime_ns) < scan_ns - _RACY_NS:
                cache.entries[rel] = [*_fingerprint(st), sha]
                cache.dirty = True
            elif cache.entries.pop(rel, None) is not None:  # racily clean: never trusted, hashed next time
                cache.dirty = True
    return {rel: out[rel] for rel, _ in pairs}


def git_info(source_dir: str | pathlib.Path) -> dict | None:
    """{commit, branch, dirty} of the git work tree holding ``source_dir``, or None (no git, no repo)."""
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain=v2", "--branch", "--untracked-files=normal", "."],
            cwd=source_dir, capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    commit = branch = None
    dirty = False
    for line in proc.stdout.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.split(" ", 2)[2]
            commit = None if commit == "(initial)" else commit
        elif line.startswith("# branch.head "):
            branch = line.split(" ", 2)[2]
            branch = None if branch == "(detached)" else branch
        elif line and not line.startswith("#"):
            dirty = True
    return {"commit": commit, "branch": branch, "dirty": dirty}


def _write_archive(pairs: list[tuple[str, pathlib.Path]], files: dict[str, dict], target: pathlib.Path) -> None:
    with open(target, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for rel, path in pairs:
                info = tarfile.TarInfo(rel)
                info.size = files[rel]["size"]
                info.mtime = 0
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)


def snapshot_source(
    datastore: Datastore,
    source_dir: str | pathlib.Path,
    hash_paths: list[str] | None = None,
    cache_dir: str | pathlib.Path | None = None,
    git: bool = True,
    trust_cache: bool = True,
) -> Snapshot:
    """Snapshot ``source_dir`` into ``datastore`` (uploaded only if that content is not there yet).
    ``trust_cache=False`` reads and hashes every file (the stat cache is only refreshed)."""
    source = pathlib.Path(source_dir)
    pairs = select_files(source)
    if not pairs:
        raise DefinitionError(f"source directory {str(source)!r} has no file to snapshot (all ignored?); put the "
                              "step's script there or fix its .gitignore / .amlignore")
    cache = _StatCache(pathlib.Path(cache_dir) if cache_dir else default_cache_dir(), source)
    try:
        files = _hash_files(pairs, cache, trust_cache)
    except OSError as exc:
        raise WorkspaceError(f"cannot read the source directory {str(source)!r}: {exc}") from exc
    cache.save(set(files))
    shas = {rel: meta["sha256"] for rel, meta in files.items()}
    content_sha = tree_hash(shas)
    if hash_paths:
        spec = _spec(hash_paths)
        hashed = sorted(rel for rel in files if spec.match_file(rel))
        if not hashed:
            raise DefinitionError(f"hash_paths {hash_paths!r} match no file of {str(source)!r}; fix the step's "
                                  "hash_paths (globs relative to its source_directory)")
        sha = tree_hash({rel: shas[rel] for rel in hashed})
    else:
        hashed, sha = sorted(files), content_sha
    info = git_info(source) if git else None
    key = f"snapshots/{content_sha}.tar.gz"
    uploaded = False
    if not datastore.exists(key):
        with tempfile.TemporaryDirectory(prefix="mlpipe-snapshot-") as scratch:
            archive = pathlib.Path(scratch, "snapshot.tar.gz")
            try:
                _write_archive(pairs, files, archive)
            except (OSError, tarfile.TarError) as exc:
                raise WorkspaceError(f"cannot archive {str(source)!r} (did a file change during the snapshot?): {exc}") from exc
            datastore.upload_file(archive, key)
        uploaded = True
    sidecar = {"format": 1, "sha256": content_sha, "files": files, "git": info, "created": now_iso()}
    if uploaded or not datastore.exists(f"snapshots/{content_sha}.json"):
        datastore.create_json(f"snapshots/{content_sha}.json", sidecar)
    if sha != content_sha and not datastore.exists(f"snapshots/{sha}.json"):
        datastore.create_json(
            f"snapshots/{sha}.json",
            {**sidecar, "sha256": sha, "files": {rel: files[rel] for rel in hashed}, "hash_paths": list(hash_paths or [])},
        )
    return Snapshot(sha, key, files, info, uploaded, content_sha, tuple(hashed))


def read_snapshot_files(datastore: Datastore, sha: str) -> dict[str, dict] | None:
    """The {path: {size, sha256}} map a snapshot sidecar lists (None if unknown)."""
    doc = datastore.get_json_or_none(f"snapshots/{sha}.json") if sha and "/" not in sha else None
    files = doc.get("files") if isinstance(doc, dict) else None
    return files if isinstance(files, dict) else None


def unpack_snapshot(datastore: Datastore, key: str, dest_dir: str | pathlib.Path) -> list[str]:
    """Extract the snapshot archive ``key`` into ``dest_dir`` (``rules.extract_tar``: regular files and
    folders only, nothing outside it). Returns the extracted file names."""
    try:
        return extract_archive(datastore, key, dest_dir)
    except ArchiveError as exc:
        raise WorkspaceError(
            f"cannot unpack snapshot {datastore.uri_for(key)}: {exc}. It is damaged or was not written by "
            "airflow_mlpipe: delete it and the next run of the step snapshots its source again"
        ) from exc
    except OSError as exc:
        raise WorkspaceError(f"cannot unpack snapshot {datastore.uri_for(key)} into {dest_dir}: {exc}") from exc
