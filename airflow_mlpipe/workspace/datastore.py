"""Datastores: one interface over a local directory and an S3 prefix.

Keys are '/'-separated relative paths below the workspace root (no leading '/', no '.' or '..'
segments, no empty segments). A *prefix* is a key naming a "directory": ``list("a/b")`` yields the
keys below ``a/b/``; the empty prefix is the whole root.

This module imports only the standard library at import time (boto3 lazily, inside the S3
backend): the step runtime ships it into images that only have python3. ``S3Datastore`` lives in
``s3.py`` (same rule; re-exported here lazily). Every module of ``workspace/`` follows this rule.

Contract (implemented by LocalDatastore and S3Datastore):
- read_bytes / write_bytes / exists / delete / list(prefix) / list_dirs(prefix) / copy
- get_json / put_json (overwrite) / create_json (atomic create-if-absent -> False if it exists;
  S3: put_object(IfNoneMatch='*'); local: os.link of a complete temp file)
- get_json_with_etag / put_json_if (compare-and-swap; S3: IfMatch / IfNoneMatch, local: a lock file)
- upload_file / download_file / upload_dir / download_dir / upload_many / download_many
  (S3: boto3 transfer manager, multipart + concurrency; small files on a thread pool)
- local_path(key) -> pathlib.Path | None  (a real path on this machine)
- fingerprints(prefix, settle=False) -> {relative path: fingerprint}: what the store cheaply knows of each
  object, to tell later whether it changed (``fingerprint_kind`` names the sort: ``stat`` = [size,
  mtime_ns, inode, ctime_ns] of a local file, ``etag`` = [size, ETag] of an S3 object); fingerprint(key):
  the same for one object (None if the store cannot tell)
- open(key) -> a binary file object to read one object in chunks (S3: the GET's streaming body)

Missing keys raise ``NotFoundError``; other storage failures raise ``WorkspaceError``.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import stat
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from airflow_mlpipe.errors import ConflictError, NotFoundError, WorkspaceError
from airflow_mlpipe.rules import is_plain_segment

__all__ = [
    "Datastore",
    "LocalDatastore",
    "ObjectInfo",
    "check_key",
    "check_prefix",
    "join_key",
    "open_datastore",
]

Progress = Callable[[int], None]

MB = 1024 * 1024
# Files whose basename starts with this are the datastore's own (temp files, locks): never listed.
_INTERNAL = ".mlpipe-"
# Racy-clean margin: a local fingerprint is trusted only if it was taken this long after the file's ctime,
# more than the kernel's timestamp granularity (one tick, 1-10 ms), so any later change gets a newer ctime.
RACY_MARGIN_NS = 20_000_000
_S_IFMT, _S_IFREG = stat.S_IFMT(0o177777), stat.S_IFREG


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    mtime: float | None = None  # seconds since the epoch (last modification), when the backend knows it
    etag: str | None = None  # the object's ETag, when the backend has one (S3)


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative key, else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid datastore key {key!r}: expected a non-empty relative path like 'a/b.json'")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid datastore key {key!r}: keys are relative '/'-separated paths")
    for part in key.split("/"):
        if not is_plain_segment(part):
            raise ValueError(f"invalid datastore key {key!r}: empty, '.' or '..' segment")
    return key


def check_prefix(prefix: str) -> str:
    """Return the normalised prefix (no trailing '/'); '' is the root."""
    if prefix is None:
        raise ValueError("invalid datastore prefix None")
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return check_key(stripped) if stripped else ""


def join_key(*parts: str) -> str:
    return check_key("/".join(p.strip("/") for p in parts if p and p.strip("/")))


def _dumps(doc: Any) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _loads(data: bytes, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise WorkspaceError(f"{where} is not valid JSON ({exc}); remove or repair it") from exc


def local_files(local_dir: str | pathlib.Path) -> list[tuple[str, pathlib.Path]]:
    """Regular files below ``local_dir`` as sorted (relative '/'-path, path) pairs.
    Symlinks to files are followed; symlinked directories are not entered."""
    root = pathlib.Path(local_dir)
    if not root.is_dir():
        raise NotFoundError(f"local directory {str(root)!r} does not exist")
    out: list[tuple[str, pathlib.Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = pathlib.Path(dirpath)
        for name in filenames:
            path = base / name
            if path.is_file():
                out.append((path.relative_to(root).as_posix(), path))
    out.sort(key=lambda item: item[0])
    return out


class Datastore(abc.ABC):
    """A place to keep bytes under keys. ``uri`` is the root (file:///abs/dir or s3://bucket/prefix)."""

    uri: str
    fingerprint_kind = "etag"

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object below ``prefix`` (recursively), sorted by key."""

    @abc.abstractmethod
    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate "sub-directories" of ``prefix`` (sorted)."""

    @abc.abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None: ...

    @abc.abstractmethod
    def upload_file(self, local_path: str | pathlib.Path, key: str, progress: Progress | None = None) -> None: ...

    @abc.abstractmethod
    def download_file(self, key: str, local_path: str | pathlib.Path, progress: Progress | None = None) -> None: ...

    @abc.abstractmethod
    def create_json(self, key: str, doc: Any) -> bool:
        """Atomically create ``key`` with ``doc`` unless it exists. True if created, False if it existed."""

    @abc.abstractmethod
    def get_json_with_etag(self, key: str) -> tuple[Any, str] | None:
        """(document, etag) of ``key``, or None if it does not exist."""

    @abc.abstractmethod
    def put_json_if(self, key: str, doc: Any, etag: str | None) -> bool:
        """Write ``doc`` only if ``key`` still has ``etag`` (None: only if ``key`` does not exist).
        True if written, False if someone else changed it first."""

    @abc.abstractmethod
    def local_path(self, key: str) -> pathlib.Path | None: ...

    # Derived operations; backends may override them with faster ones.
    def get_json(self, key: str) -> Any:
        return _loads(self.read_bytes(key), self.uri_for(key))

    def get_json_or_none(self, key: str) -> Any:
        try:
            return self.get_json(key)
        except NotFoundError:
            return None

    def put_json(self, key: str, doc: Any) -> None:
        self.write_bytes(key, _dumps(doc))

    def upload_many(self, items: Iterable[tuple[str | pathlib.Path, str]], progress: Progress | None = None) -> list[ObjectInfo]:
        """Upload (local path, key) pairs."""
        out = []
        for path, key in items:
            self.upload_file(path, key, progress)
            out.append(ObjectInfo(key, os.path.getsize(path)))
        return out

    def download_many(self, items: Iterable[tuple[str, str | pathlib.Path]], progress: Progress | None = None) -> list[ObjectInfo]:
        """Download (key, local path) pairs."""
        out = []
        for key, path in items:
            self.download_file(key, path, progress)
            out.append(ObjectInfo(key, os.path.getsize(path)))
        return out

    def upload_dir(self, local_dir: str | pathlib.Path, prefix: str, progress: Progress | None = None) -> list[ObjectInfo]:
        """Upload every file below ``local_dir`` to ``prefix/<relative path>`` (existing keys are overwritten,
        other keys below ``prefix`` are left alone)."""
        prefix = check_prefix(prefix)
        items = [(path, join_key(prefix, rel)) for rel, path in local_files(local_dir)]
        return self.upload_many(items, progress)

    def download_dir(self, prefix: str, local_dir: str | pathlib.Path, progress: Progress | None = None) -> list[ObjectInfo]:
        """Download every object below ``prefix`` into ``local_dir``."""
        prefix = check_prefix(prefix)
        dest = pathlib.Path(local_dir)
        cut = len(prefix) + 1 if prefix else 0
        items = [(info.key, dest / info.key[cut:]) for info in self.list(prefix)]
        dest.mkdir(parents=True, exist_ok=True)
        return self.download_many(items, progress)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object below ``prefix``; returns how many were deleted."""
        keys = [info.key for info in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def fingerprints(self, prefix: str, settle: bool = False) -> dict[str, list | None]:
        """{path relative to ``prefix``: [size, etag]} of every object below ``prefix`` (one listing).
        ``settle`` matters only for local files."""
        prefix = check_prefix(prefix)
        cut = len(prefix) + 1 if prefix else 0
        return {info.key[cut:]: [info.size, info.etag] for info in self.list(prefix)}

    def fingerprint(self, key: str) -> list | None:
        """The fingerprint of the one object ``key`` (as ``fingerprints`` gives it), or None if this store
        cannot tell; NotFoundError if ``key`` does not exist."""
        if not self.exists(key):
            raise NotFoundError(f"{self.uri_for(key)} does not exist")
        return None

    def open(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        """``with datastore.open(key) as fh: fh.read(n)``: the object's bytes in chunks."""
        import io

        return contextlib.closing(io.BytesIO(self.read_bytes(key)))

    def uri_for(self, key: str) -> str:
        key = check_prefix(key)
        return f"{self.uri}/{key}" if key else self.uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


# --------------------------------------------------------------------------------------------- local


def extract_archive(datastore: Datastore, key: str, dest: str | pathlib.Path) -> list[str]:
    """Extract the tar archive at ``key`` into ``dest`` with ``rules.extract_tar`` (regular files and folders
    only, nothing outside ``dest``): read in place from a local store, else downloaded to a temporary file
    first. Returns the extracted file names; ``rules.ArchiveError`` and OSError propagate for the caller to
    say what they mean to it (the workspace and the step runtime both unpack snapshots with it)."""
    import tempfile

    from airflow_mlpipe.rules import extract_tar

    with tempfile.TemporaryDirectory(prefix="mlpipe-unpack-") as scratch:
        local = datastore.local_path(check_key(key))
        if local is None or not local.is_file():
            local = pathlib.Path(scratch, pathlib.PurePosixPath(key).name or "archive")
            datastore.download_file(key, local)
        return extract_tar(local, dest)


def temp_name(path: pathlib.Path) -> pathlib.Path:
    """A unique temporary name beside ``path``, hidden from listings (``_INTERNAL`` prefix)."""
    return path.with_name(f"{_INTERNAL}tmp-{uuid.uuid4().hex}-{path.name}")


def write_file_atomically(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to the local file ``path`` (its folder exists) through a temporary name: a reader,
    or a process killed halfway, sees the old file or the whole new one, never a part."""
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WorkspaceError(f"cannot write {path}: {exc}") from exc


class LocalDatastore(Datastore):
    """A directory on this machine. Writes are atomic (temp file + ``os.replace``)."""

    fingerprint_kind = "stat"

    def __init__(self, root: str | pathlib.Path):
        root = pathlib.Path(root).expanduser()
        if not root.is_absolute():
            raise ValueError(f"LocalDatastore root must be an absolute path, got {str(root)!r}")
        self.root = pathlib.Path(os.path.abspath(root))
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> pathlib.Path:
        return self.root.joinpath(*check_key(key).split("/"))

    def _dir(self, prefix: str) -> pathlib.Path:
        prefix = check_prefix(prefix)
        return self.root.joinpath(*prefix.split("/")) if prefix else self.root

    def _temp_for(self, path: pathlib.Path) -> pathlib.Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return temp_name(path)

    def _atomic_write(self, path: pathlib.Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(path, data)

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(f"{self.uri_for(key)} does not exist") from exc
        except OSError as exc:
            raise WorkspaceError(f"cannot read {path}: {exc}") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(self._path(key), data)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            return
        except OSError as exc:
            raise WorkspaceError(f"cannot delete {self.uri_for(key)}: {exc}") from exc

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self._dir(prefix)
        if not base.is_dir():
            return iter(())
        infos = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in filenames:
                if name.startswith(_INTERNAL):
                    continue
                path = pathlib.Path(dirpath, name)
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # deleted while listing
                infos.append(ObjectInfo(path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime))
        infos.sort(key=lambda info: info.key)
        return iter(infos)

    def list_dirs(self, prefix: str) -> list[str]:
        base = self._dir(prefix)
        try:
            return sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith(_INTERNAL))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def copy(self, src_key: str, dst_key: str) -> None:
        src = self._path(src_key)
        if not src.is_file():
            raise NotFoundError(f"{self.uri_for(src_key)} does not exist")
        self._copy_in(src, self._path(dst_key), None)

    def _copy_in(self, src: pathlib.Path, dst: pathlib.Path, progress: Progress | None) -> None:
        tmp = self._temp_for(dst)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except FileNotFoundError as exc:
            tmp.unlink(missing_ok=True)
            raise NotFoundError(f"{src} does not exist") from exc
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise WorkspaceError(f"cannot copy {src} to {dst}: {exc}") from exc
        if progress is not None:
            progress(dst.stat().st_size)

    def upload_file(self, local_path: str | pathlib.Path, key: str, progress: Progress | None = None) -> None:
        self._copy_in(pathlib.Path(local_path), self._path(key), progress)

    def download_file(self, key: str, local_path: str | pathlib.Path, progress: Progress | None = None) -> None:
        src = self._path(key)
        if not src.is_file():
            raise NotFoundError(f"{self.uri_for(key)} does not exist")
        self._copy_in(src, pathlib.Path(local_path), progress)

    def create_json(self, key: str, doc: Any) -> bool:
        path = self._path(key)
        tmp = self._temp_for(path)
        try:
            tmp.write_bytes(_dumps(doc))
            try:
                os.link(tmp, path)  # atomic, and the content is complete when the name appears
            except FileExistsError:
                return False
            except OSError:  # no hard links here: exclusive create (content written after)
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_dumps(doc))
            return True
        except OSError as exc:
            raise WorkspaceError(f"cannot create {path}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def get_json_with_etag(self, key: str) -> tuple[Any, str] | None:
        try:
            data = self.read_bytes(key)
        except NotFoundError:
            return None
        return _loads(data, self.uri_for(key)), hashlib.sha256(data).hexdigest()

    def put_json_if(self, key: str, doc: Any, etag: str | None) -> bool:
        path = self._path(key)
        with _FileLock(path.with_name(f"{_INTERNAL}lock-{path.name}")):
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                current = None
            if current != etag:
                return False
            self._atomic_write(path, _dumps(doc))
            return True

    def local_path(self, key: str) -> pathlib.Path | None:
        key = check_prefix(key)
        return self._dir(key)

    def open(self, key: str) -> contextlib.AbstractContextManager[IO[bytes]]:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFoundError(f"{self.uri_for(key)} does not exist") from exc
        except OSError as exc:
            raise WorkspaceError(f"cannot read {path}: {exc}") from exc

    def fingerprint(self, key: str) -> list | None:
        """[size, mtime_ns, inode, ctime_ns] of the regular file ``key`` (NotFoundError if there is none)."""
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFoundError(f"{self.uri_for(key)} does not exist") from exc
        if st.st_mode & _S_IFMT != _S_IFREG:
            raise NotFoundError(f"{self.uri_for(key)} is not a file")
        return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]

    def fingerprints(self, prefix: str, settle: bool = False) -> dict[str, list | None]:
        """{path relative to ``prefix``: [size, mtime_ns, inode, ctime_ns]} of every regular file below
        ``prefix``: one stat per file (symlinks to files followed, symlinked folders not entered).

        ``settle`` (for a fingerprint that will be trusted later): wait, at most ``RACY_MARGIN_NS``, until
        the clock is past the newest ctime by that margin before taking the stats, so that any later change
        gets a newer ctime; a file whose ctime is still too recent (a concurrent writer, a clock step) gets
        None, i.e. no fingerprint."""
        if settle:
            newest = max((fp[3] for fp in self.fingerprints(prefix).values() if fp), default=0)
            wait = newest + RACY_MARGIN_NS - time.time_ns()
            if wait > 0:
                time.sleep(min(wait, RACY_MARGIN_NS) / 1e9)
            started = time.time_ns()
        out: dict[str, list | None] = {}
        stack = [(str(self._dir(prefix)), "")]
        while stack:
            folder, rel = stack.pop()
            try:
                entries = os.scandir(folder)
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(_INTERNAL):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, f"{rel}{name}/"))
                        continue
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue  # deleted while listing, or a dangling link
                    if st.st_mode & _S_IFMT == _S_IFREG:  # S_ISREG, without a call per file
                        out[rel + name] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        if settle:
            for rel, fp in out.items():
                if fp is not None and started - fp[3] <= RACY_MARGIN_NS:
                    out[rel] = None
        return out

    def delete_prefix(self, prefix: str) -> int:
        if not check_prefix(prefix):
            raise ValueError("refusing to delete the whole workspace root")
        base = self._dir(prefix)
        if not base.is_dir():
            return 0
        count = sum(1 for _ in self.list(prefix))
        shutil.rmtree(base, ignore_errors=True)
        return count

class _FileLock:
    """An inter-process lock on a lock file (fcntl.flock where available, else O_EXCL + polling)."""

    def __init__(self, path: pathlib.Path, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None
        self._excl = False

    def __enter__(self) -> _FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        if fcntl is not None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            return self
        deadline = time.monotonic() + self.timeout  # pragma: no cover
        while True:  # pragma: no cover
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                self._excl = True
                return self
            except FileExistsError as exc:
                if time.monotonic() > deadline:
                    raise ConflictError(f"lock {self.path} is held; remove it if no writer is running") from exc
                time.sleep(0.01)

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        if self._excl:  # pragma: no cover
            self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- open

_S3_OPTIONS = {
    "endpoint_url", "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "region_name",
    "max_concurrency", "multipart_threshold", "multipart_chunksize", "max_attempts",
}


def open_datastore(uri: str, **options: Any) -> Datastore:
    """``file:///abs/dir`` (or a plain absolute path) -> LocalDatastore;
    ``s3://bucket/prefix`` -> S3Datastore(options: endpoint_url, aws_access_key_id,
    aws_secret_access_key, aws_session_token, region_name, max_concurrency, multipart_threshold,
    multipart_chunksize, max_attempts). Options that are None are ignored.

    S3 fallbacks (how the step runtime inside a container gets them): the endpoint from
    ``MLPIPE_S3_ENDPOINT_URL``; credentials and region from the standard AWS variables (boto3)."""
    unknown = set(options) - _S3_OPTIONS
    if unknown:
        raise TypeError(f"open_datastore() got unknown options {sorted(unknown)}")
    options = {k: v for k, v in options.items() if v is not None}
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"invalid workspace URI {uri!r}")
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"invalid S3 workspace URI {uri!r}: expected s3://bucket/prefix")
        options.setdefault("endpoint_url", os.environ.get("MLPIPE_S3_ENDPOINT_URL") or None)
        from airflow_mlpipe.workspace.s3 import S3Datastore

        return S3Datastore(parsed.netloc, parsed.path.strip("/"), **options)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"invalid file URI {uri!r}: expected file:///absolute/dir")
        return LocalDatastore(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "" and os.path.isabs(uri):
        return LocalDatastore(uri)
    raise ValueError(f"unsupported workspace URI {uri!r}: use file:///absolute/dir or s3://bucket/prefix")



def __getattr__(name: str) -> Any:
    if name == "S3Datastore":  # lives in s3.py (stdlib-only too); re-exported for convenience
        from airflow_mlpipe.workspace.s3 import S3Datastore

        return S3Datastore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
