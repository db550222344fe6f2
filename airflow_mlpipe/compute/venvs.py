"""Isolated virtual environments for local steps, built once per environment hash and reused.

Layout (``MLPIPE_VENV_DIR``, default ``~/.cache/airflow_mlpipe/venvs``)::

    <hash>/              a ready environment (it has ``.mlpipe-env.json``, written last)
    <hash>.lock          fcntl lock: one builder at a time per hash, across processes
    .build-<hash>-<rnd>/ a build in progress (uv), renamed to <hash> when complete
    .interpreters/<h>.json  identity of an interpreter used without a venv (``interpreter_identity``)

The directory name (``venv_key``) covers the base interpreter (its real path on this worker), the
sorted requirements and the content of the requirements file, including the files it names with
``-r``/``-c`` (recursively, by content: ``requirements_digest``). With uv (``uv.find_uv_bin()`` or
``uv`` on PATH) the environment is made by ``uv venv --relocatable`` in a temp dir and renamed into
place atomically; without uv, ``python -m venv`` + pip build it in place under the lock, and it counts
only once its marker exists. Either way a reader never sees a half-built environment and two workers
never build the same one twice.

What the step cache key holds is what was really built, probed once in the new venv and kept in its
marker: ``identity = {"python": <real path of the base interpreter>, "python_version": "3.11.7",
"packages": ["name==version", ...]}`` (``venv_identity``). The marker also keeps a ``fingerprint``
(size and mtime of the interpreter file; per ``sys.path`` directory, the names of its package metadata
entries): while it matches, reading the identity is one small file read, a ``stat`` and a few
``listdir`` calls; when it does not (a package installed into the venv, the interpreter upgraded in
place) the venv is probed again and the marker rewritten.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from airflow_mlpipe.errors import ComputeError, ComputeSetupError

VENV_DIR_ENV = "MLPIPE_VENV_DIR"
MARKER = ".mlpipe-env.json"


@dataclasses.dataclass(frozen=True)
class Venv:
    path: pathlib.Path
    python: pathlib.Path
    env_hash: str  # the venv_key: names the directory on this worker (not a portable identity)
    created: bool  # False: reused from the cache
    seconds: float
    backend: str  # "uv" | "pip" | "cached"


def default_venv_dir() -> pathlib.Path:
    configured = os.environ.get(VENV_DIR_ENV)
    if configured:
        return pathlib.Path(configured)
    return pathlib.Path.home() / ".cache" / "airflow_mlpipe" / "venvs"


def find_uv() -> str | None:
    """The uv binary: the ``uv`` Python package's, else ``uv`` on PATH; None without uv."""
    try:
        import uv  # the PyPI package ships the binary

        found = uv.find_uv_bin()
        if found and os.access(found, os.X_OK):
            return str(found)
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def find_python(python: str) -> str:
    """The interpreter as the step would start it (``python3`` looked up on PATH, or a path)."""
    found = python if os.sep in python else shutil.which(python)
    if not found or not os.access(found, os.X_OK):
        raise ComputeSetupError(
            f"python interpreter {python!r} not found on this worker (PATH={os.environ.get('PATH', '')!r}); "
            "install it or set the environment's 'python' to an existing interpreter"
        )
    return os.path.abspath(found)


def resolve_python(python: str) -> pathlib.Path:
    """Absolute real path of the base interpreter (``python3``, ``python3.11`` or a path)."""
    return pathlib.Path(os.path.realpath(find_python(python)))


def normalise_requirements(requirements: Iterable[str]) -> list[str]:
    return sorted({r.strip() for r in requirements if r and r.strip()})


_NESTED_OPTION = re.compile(r"^(?:-r|-c|--requirement|--constraint)(?:=|\s+|(?<=-r)|(?<=-c))(.+)$")


def _nested_references(text: str) -> list[str]:
    """The files a requirements text names with ``-r``/``-c`` (pip's line syntax: comments, ``\\``
    continuations, ``-rFILE``, ``-r FILE``, ``--requirement=FILE``)."""
    names = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        match = _NESTED_OPTION.match(line)
        if match:
            try:
                parts = shlex.split(match.group(1))
            except ValueError:
                parts = match.group(1).split()
            if parts:
                names.append(parts[0])
    return names


def requirements_digest(path: str | os.PathLike[str] | None) -> str | None:
    """sha256 of a requirements file's content and, recursively, of every file it names with
    ``-r``/``-c``/``--requirement``/``--constraint`` (relative to the file that names it, as pip reads
    them). By content only: the same tree anywhere has the same digest. URLs count by their text."""

    def digest(file: pathlib.Path, trail: tuple[pathlib.Path, ...]) -> bytes:
        try:
            data = file.read_bytes()
        except OSError as exc:
            named_by = f" (named in {trail[-1]})" if trail else ""
            raise ComputeSetupError(
                f"cannot read the requirements file {str(file)!r}{named_by}: {exc.strerror or exc}; "
                "fix the path (nested -r/-c paths are relative to the file that names them)"
            ) from exc
        outer = hashlib.sha256(data)
        for name in _nested_references(data.decode("utf-8", errors="replace")):
            if "://" in name:
                continue  # a URL: its text is in ``data`` already
            nested = pathlib.Path(os.path.expanduser(name))
            nested = nested if nested.is_absolute() else file.parent / nested
            real = pathlib.Path(os.path.realpath(nested))
            if real in trail or real == pathlib.Path(os.path.realpath(file)):
                outer.update(b"cycle\0")
                continue
            outer.update(b"\0" + digest(nested, (*trail, pathlib.Path(os.path.realpath(file)))))
        return outer.digest()

    if not path:
        return None
    return digest(pathlib.Path(path), ()).hex()


def venv_key(
    python: str, requirements: Iterable[str] = (), requirements_file: str | os.PathLike[str] | None = None
) -> str:
    """Names a venv directory on this worker: the interpreter's real path, the sorted requirements
    and the requirements file's content with the files it names (``requirements_digest``)."""
    doc = {
        "python": str(resolve_python(python)),
        "requirements": normalise_requirements(requirements),
        "requirements_file": requirements_digest(requirements_file),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _venv_python(path: pathlib.Path) -> pathlib.Path:
    return path / "bin" / "python"


def _ready(path: pathlib.Path) -> bool:
    return (path / MARKER).is_file() and _venv_python(path).exists()


# -- identity: what was really built --------------------------------------------------------------
# Run with ``-I`` in the interpreter (or venv) to describe: its version, every installed distribution
# (the first one on sys.path wins, as for an import) and the sys.path directories they come from.
_PROBE = """
import importlib.metadata as m, json, os, platform, re, sys
found = {}
for dist in m.distributions():
    name = dist.metadata["Name"]
    if name:
        found.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
print(json.dumps({"python_version": platform.python_version(),
                  "packages": sorted(k + "==" + v for k, v in found.items()),
                  "path": [p for p in sys.path if os.path.isdir(p)]}))
"""
_METADATA_SUFFIXES = (".dist-info", ".egg-info", ".egg-link", ".pth")
_IN_VENV = "{venv}/"


def _probe(python: str, venv: pathlib.Path | None) -> tuple[dict[str, Any], list[str]]:
    """(identity without "python", sys.path dirs; those inside ``venv`` written relative to it)."""
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    try:
        proc = subprocess.run([python, "-I", "-c", _PROBE], capture_output=True, text=True, env=env,
                              timeout=300, check=False)
        doc = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as exc:
        raise ComputeError(f"cannot describe the step environment of {python}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ComputeError(f"cannot describe the step environment of {python}: exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-2000:]}")
    root = f"{os.path.realpath(venv)}{os.sep}" if venv is not None else None
    dirs = []
    for entry in doc["path"]:
        real = os.path.realpath(entry)
        dirs.append(_IN_VENV + real[len(root):] if root and real.startswith(root) else real)
    return {"python_version": doc["python_version"], "packages": doc["packages"]}, dirs


def _fingerprint(python_real: str, dirs: Iterable[str], venv: pathlib.Path | None) -> dict[str, Any]:
    """Cheap evidence that a probe still holds: the interpreter file (size, mtime) and, per sys.path
    directory, the names of its package metadata entries (``*.dist-info``...; a ``.pyc`` cache written
    next to them does not count)."""
    try:
        st = os.stat(python_real)
        doc: dict[str, Any] = {"python": [st.st_size, st.st_mtime_ns], "dirs": {}}
    except OSError:
        return {"python": None, "dirs": {}}
    for stored in dirs:
        path = venv / stored[len(_IN_VENV):] if venv is not None and stored.startswith(_IN_VENV) else pathlib.Path(stored)
        try:
            names = sorted(n for n in os.listdir(path) if n.endswith(_METADATA_SUFFIXES))
        except OSError:
            doc["dirs"][stored] = None
            continue
        doc["dirs"][stored] = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    return doc


def _write_json(path: pathlib.Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _describe(python: str, python_real: str, venv: pathlib.Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    identity, dirs = _probe(python, venv)
    return {"python": python_real, **identity}, _fingerprint(python_real, dirs, venv)


def venv_identity(venv: Venv | str | os.PathLike[str]) -> dict[str, Any]:
    """What a built venv really is: ``{"python", "python_version", "packages"}``, from its marker (one
    file read and a few ``stat``); probed again, and the marker rewritten, only if its fingerprint
    no longer matches (or the marker predates identities)."""
    path = pathlib.Path(venv.path if isinstance(venv, Venv) else venv)
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError) as exc:
        raise ComputeError(f"step environment {path} has no readable marker {MARKER}: {exc}; delete the "
                           "directory so that it is built again") from exc
    identity, fingerprint = marker.get("identity"), marker.get("fingerprint")
    if isinstance(identity, dict) and isinstance(fingerprint, dict):
        if _fingerprint(identity["python"], fingerprint.get("dirs") or {}, path) == fingerprint:
            return identity
    python_real = str(marker.get("python") or os.path.realpath(_venv_python(path)))
    marker["identity"], marker["fingerprint"] = _describe(str(_venv_python(path)), python_real, path)
    _write_json(path / MARKER, marker)
    return marker["identity"]


def interpreter_identity(python: str, cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The identity of an interpreter used as it is (no venv; local ``isolated: false``): like
    ``venv_identity``, kept in ``<cache_dir>/.interpreters/`` and probed again when its fingerprint moves."""
    found = find_python(python)
    python_real = os.path.realpath(found)
    record = (pathlib.Path(cache_dir) if cache_dir else default_venv_dir()) / ".interpreters" / (
        hashlib.sha256(found.encode()).hexdigest()[:24] + ".json")
    try:
        doc = json.loads(record.read_text())
        if doc.get("identity", {}).get("python") == python_real and doc.get("fingerprint") == _fingerprint(
                python_real, (doc.get("fingerprint") or {}).get("dirs") or {}, None):
            return doc["identity"]
    except (OSError, ValueError, AttributeError):
        pass
    identity, fingerprint = _describe(found, python_real, None)
    record.parent.mkdir(parents=True, exist_ok=True)
    _write_json(record, {"interpreter": found, "identity": identity, "fingerprint": fingerprint})
    return identity


def _run(argv: list[str], on_log: Callable[[str], None] | None, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, check=False)
    output = proc.stdout.decode("utf-8", errors="replace")
    if on_log is not None:
        for line in output.splitlines():
            on_log(line)
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise ComputeError(f"building the step environment failed: {' '.join(argv[:4])}... exited "
                           f"{proc.returncode}:\n{tail}")


def ensure_venv(
    python: str = "python3",
    requirements: Iterable[str] = (),
    requirements_file: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_uv: bool | None = None,
    on_log: Callable[[str], None] | None = None,
) -> Venv:
    """Return the environment for (python, requirements, requirements_file), building it if needed."""
    t0 = time.monotonic()
    reqs = normalise_requirements(requirements)
    env_hash = venv_key(python, reqs, requirements_file)
    root = pathlib.Path(cache_dir) if cache_dir else default_venv_dir()
    final = root / env_hash
    if _ready(final):
        return Venv(final, _venv_python(final), env_hash, False, time.monotonic() - t0, "cached")
    root.mkdir(parents=True, exist_ok=True)
    base_python = resolve_python(python)
    uv_bin = find_uv() if use_uv in (None, True) else None
    if use_uv and uv_bin is None:
        raise ComputeSetupError("uv was requested for building step environments but is not installed")
    with open(root / f"{env_hash}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if _ready(final):  # another worker built it while we waited
                return Venv(final, _venv_python(final), env_hash, False, time.monotonic() - t0, "cached")
            if final.exists():  # a build that died half-way (pip backend builds in place)
                shutil.rmtree(final)
            if on_log is not None:
                on_log(f"building step environment {env_hash[:12]} ({base_python}; {len(reqs)} requirement(s))")
            marker = {"hash": env_hash, "python": str(base_python), "requirements": reqs,
                      "requirements_file": str(requirements_file) if requirements_file else None}
            if uv_bin is not None:
                _build_with_uv(uv_bin, base_python, reqs, requirements_file, root, final, marker, on_log)
                backend = "uv"
            else:
                _build_with_pip(base_python, reqs, requirements_file, final, marker, on_log)
                backend = "pip"
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    seconds = time.monotonic() - t0
    if on_log is not None:
        on_log(f"step environment {env_hash[:12]} ready in {seconds:.1f}s ({backend})")
    return Venv(final, _venv_python(final), env_hash, True, seconds, backend)


def _write_marker(path: pathlib.Path, marker: dict[str, Any], backend: str) -> None:
    """Probe the finished venv (its identity), then write the marker: the venv counts from now on."""
    identity, fingerprint = _describe(str(_venv_python(path)), str(marker["python"]), path)
    _write_json(path / MARKER, dict(marker, backend=backend, created=time.time(), identity=identity,
                                    fingerprint=fingerprint))


def _build_with_uv(
    uv_bin: str,
    base_python: pathlib.Path,
    reqs: list[str],
    requirements_file: str | os.PathLike[str] | None,
    root: pathlib.Path,
    final: pathlib.Path,
    marker: dict[str, Any],
    on_log: Callable[[str], None] | None,
) -> None:
    tmp = root / f".build-{final.name}-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")
    env.pop("VIRTUAL_ENV", None)
    try:
        _run([uv_bin, "venv", "--quiet", "--relocatable", "--python", str(base_python), str(tmp)], on_log, env)
        if reqs or requirements_file:
            argv = [uv_bin, "pip", "install", "--python", str(_venv_python(tmp)), *reqs]
            if requirements_file:
                argv += ["-r", str(requirements_file)]
            _run(argv, on_log, env)
        _write_marker(tmp, marker, "uv")
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _build_with_pip(
    base_python: pathlib.Path,
    reqs: list[str],
    requirements_file: str | os.PathLike[str] | None,
    final: pathlib.Path,
    marker: dict[str, Any],
    on_log: Callable[[str], None] | None,
) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("VIRTUAL_ENV", None)
    try:
        _run([str(base_python), "-m", "venv", str(final)], on_log, env)
        if reqs or requirements_file:
            argv = [str(_venv_python(final)), "-m", "pip", "install", "--quiet", *reqs]
            if requirements_file:
                argv += ["-r", str(requirements_file)]
            _run(argv, on_log, env)
        _write_marker(final, marker, "pip")
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise


def remove_venv(env_hash: str, cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete one cached environment (under its lock)."""
    root = pathlib.Path(cache_dir) if cache_dir else default_venv_dir()
    if not (root / env_hash).exists():
        return
    with open(root / f"{env_hash}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        shutil.rmtree(root / env_hash, ignore_errors=True)


if __name__ == "__main__":  # pragma: no cover - manual helper: python -m airflow_mlpipe.compute.venvs six
    print(ensure_venv(sys.executable, sys.argv[1:], on_log=print))
