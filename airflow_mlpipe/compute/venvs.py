"""Isolated virtual environments for local steps, built once per environment hash and reused.

Layout (``MLPIPE_VENV_DIR``, default ``~/.cache/airflow_mlpipe/venvs``)::

    <hash>/              a ready environment (it has ``.mlpipe-env.json``, written last)
    <hash>.lock          fcntl lock: one builder at a time per hash, across processes
    .build-<hash>-<rnd>/ a build in progress (uv), renamed to <hash> when complete

The directory name (``venv_key``) covers the base interpreter (its real path on this worker), the
sorted requirements and the content of the requirements file. ``environment_hash`` is the portable
identity used by the step cache key (no worker paths: the compute target is not part of the key). With uv (``uv.find_uv_bin()`` or ``uv`` on PATH) the environment is made by
``uv venv --relocatable`` in a temp dir and renamed into place atomically; without uv,
``python -m venv`` + pip build it in place under the lock, and it counts only once its marker exists.
Either way a reader never sees a half-built environment and two workers never build the same one
twice.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from airflow_mlpipe.errors import ComputeError, ComputeSetupError

VENV_DIR_ENV = "MLPIPE_VENV_DIR"
MARKER = ".mlpipe-env.json"


@dataclasses.dataclass(frozen=True)
class Venv:
    path: pathlib.Path
    python: pathlib.Path
    env_hash: str  # the venv_key (machine-specific), not the portable environment_hash
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


def resolve_python(python: str) -> pathlib.Path:
    """Absolute real path of the base interpreter (``python3``, ``python3.11`` or a path)."""
    found = python if os.sep in python else shutil.which(python)
    if not found or not os.access(found, os.X_OK):
        raise ComputeSetupError(
            f"python interpreter {python!r} not found on this worker (PATH={os.environ.get('PATH', '')!r}); "
            "install it or set the environment's 'python' to an existing interpreter"
        )
    return pathlib.Path(os.path.realpath(found))


def normalise_requirements(requirements: Iterable[str]) -> list[str]:
    return sorted({r.strip() for r in requirements if r and r.strip()})


def _file_digest(path: str | os.PathLike[str] | None) -> str | None:
    if not path:
        return None
    try:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise ComputeSetupError(f"cannot read the requirements file {str(path)!r}: {exc}") from exc


def environment_hash(
    environment: Mapping[str, Any] | str,
    requirements: Iterable[str] = (),
    requirements_file: str | os.PathLike[str] | None = None,
) -> str:
    """The portable identity of an environment, for the step cache key: the same on every worker
    and compute target (no paths of this machine in it).

    ``environment`` is the pipeline's environment mapping (``python``, ``requirements``,
    ``requirements_file``, ``image``, ``env``), or the python name with the other two arguments.
    The requirements file counts by its content.
    """
    if isinstance(environment, str):
        environment = {"python": environment, "requirements": list(requirements), "requirements_file": requirements_file}
    doc = {
        "python": str(environment.get("python") or "python3"),
        "requirements": normalise_requirements(environment.get("requirements") or []),
        "requirements_file": _file_digest(environment.get("requirements_file")),
        "image": environment.get("image"),
        "env": {str(k): str(v) for k, v in sorted((environment.get("env") or {}).items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def venv_key(
    python: str, requirements: Iterable[str] = (), requirements_file: str | os.PathLike[str] | None = None
) -> str:
    """Names a venv directory on this worker: the interpreter's real path, the sorted requirements
    and the requirements file's content."""
    doc = {
        "python": str(resolve_python(python)),
        "requirements": normalise_requirements(requirements),
        "requirements_file": _file_digest(requirements_file),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _venv_python(path: pathlib.Path) -> pathlib.Path:
    return path / "bin" / "python"


def _ready(path: pathlib.Path) -> bool:
    return (path / MARKER).is_file() and _venv_python(path).exists()


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
    doc = dict(marker, backend=backend, created=time.time())
    tmp = path / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path / MARKER)


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
