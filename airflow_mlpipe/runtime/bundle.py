"""Shipping the runtime into a step process that does not have airflow_mlpipe installed.

Runs on the worker (and imports only the standard library, so it can also be shipped).

- ``runtime_bundle()``: a small deterministic zip of ``airflow_mlpipe/__init__.py``,
  ``errors.py``, ``rules.py`` (the snapshot is unpacked with its ``extract_tar``),
  ``airflow_mlpipe/runtime/*.py`` and the stdlib-only workspace modules the runtime uses (``datastore.py``,
  ``manifest.py``; ``s3.py`` when it imports nothing beyond the standard library at import time);
  ``workspace/__init__.py`` is replaced by an empty one if it imports more.
- ``bootstrap_command()``: ``python3 -u -c "..."`` that decodes the zip from the environment
  variable ``MLPIPE_RUNTIME_ZIP_B64``, puts it on ``sys.path`` (zipimport) and runs
  ``airflow_mlpipe.runtime.launch``: docker and kubernetes steps need an image with python3 only.
- ``stage_runtime()``: the same files unpacked into a cache directory, for ``PYTHONPATH`` (local
  compute: no zip to decode, faster start).
- ``bundle_digest()``: sha256 of the sources of the bundle, the runtime's version in the step cache
  key (with ``airflow_mlpipe.__version__``); read once per process, about 2 ms, no zip built.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import os
import pathlib
import shutil
import sys
import tempfile
import threading
import zipfile

from airflow_mlpipe.errors import ComputeError

RUNTIME_ZIP_ENV = "MLPIPE_RUNTIME_ZIP_B64"
RUNTIME_DIR_ENV = "MLPIPE_RUNTIME_DIR"
# Linux refuses a single environment string longer than MAX_ARG_STRLEN (128 KiB).
MAX_ENV_VALUE = 120_000

_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent  # .../airflow_mlpipe
_TOP_LEVEL = ("__init__.py", "errors.py", "rules.py")
_REQUIRED_WORKSPACE = ("datastore.py", "manifest.py")
_OPTIONAL_WORKSPACE = ("s3.py",)
_EMPTY_WORKSPACE_INIT = b'"""Workspace modules shipped with the step runtime (stdlib only)."""\n'
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)

# The step's cwd holds the user's snapshot: take it off sys.path before anything is imported, so a
# user file named like a stdlib module (copy.py, json.py...) cannot shadow it inside the launcher.
# (run_script puts the script's directory back for the script itself, as ``python script.py`` would.)
_UNSHADOW = "import os,sys\nsys.path[:]=[p for p in sys.path if p not in ('',os.getcwd())]\n"
_RUN_LAUNCHER = "import runpy\nrunpy.run_module('airflow_mlpipe.runtime.launch',run_name='__main__',alter_sys=True)\n"
_BOOTSTRAP = (
    _UNSHADOW
    + "import base64,tempfile\n"
    "d=tempfile.mkdtemp(prefix='mlpipe-runtime-')\n"
    "p=os.path.join(d,'airflow_mlpipe_runtime.zip')\n"
    "f=open(p,'wb');f.write(base64.b64decode(os.environ.pop('" + RUNTIME_ZIP_ENV + "')));f.close()\n"
    "sys.path.insert(0,p)\n"
    + _RUN_LAUNCHER
)

_lock = threading.RLock()  # _build reads _sources under it
_cache: dict[str, object] = {}


def _module_level_imports(source: bytes) -> set[str]:
    """Top-level module names imported at import time (not inside functions or classes)."""
    tree = ast.parse(source)
    names: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []) or [])
                for handler in getattr(node, "handlers", []) or []:
                    visit(handler.body)

    visit(tree.body)
    return names


def is_stdlib_only(source: bytes) -> bool:
    """True if the module imports nothing at import time beyond the stdlib and airflow_mlpipe."""
    stdlib = set(getattr(sys, "stdlib_module_names", ())) | {"__future__"}
    return all(name in stdlib or name == "airflow_mlpipe" for name in _module_level_imports(source))


def _sources() -> dict[str, bytes]:
    """arcname -> content of every file the bundle is made from (read once per process)."""
    with _lock:
        if "sources" not in _cache:
            sources = {f"airflow_mlpipe/{name}": (_PACKAGE_DIR / name).read_bytes() for name in _TOP_LEVEL}
            for path in sorted((_PACKAGE_DIR / "runtime").glob("*.py")):
                sources[f"airflow_mlpipe/runtime/{path.name}"] = path.read_bytes()
            for name in ("__init__.py", *_REQUIRED_WORKSPACE, *_OPTIONAL_WORKSPACE):
                path = _PACKAGE_DIR / "workspace" / name
                if path.exists():
                    sources[f"airflow_mlpipe/workspace/{name}"] = path.read_bytes()
            _cache["sources"] = sources
        return _cache["sources"]  # type: ignore[return-value]


def bundle_files() -> dict[str, bytes]:
    """arcname -> content of every file the runtime needs in a step process."""
    sources = _sources()
    files = {name: data for name, data in sources.items() if not name.startswith("airflow_mlpipe/workspace/")}
    init_source = sources.get("airflow_mlpipe/workspace/__init__.py", b"")
    files["airflow_mlpipe/workspace/__init__.py"] = (
        init_source if init_source and is_stdlib_only(init_source) else _EMPTY_WORKSPACE_INIT
    )
    for name in _REQUIRED_WORKSPACE:  # manifest.py missing -> the runtime reports it when it commits outputs
        if f"airflow_mlpipe/workspace/{name}" in sources:
            files[f"airflow_mlpipe/workspace/{name}"] = sources[f"airflow_mlpipe/workspace/{name}"]
    for name in _OPTIONAL_WORKSPACE:
        source = sources.get(f"airflow_mlpipe/workspace/{name}")
        if source is not None and is_stdlib_only(source):
            files[f"airflow_mlpipe/workspace/{name}"] = source
    return files


def _build() -> None:
    files = bundle_files()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for arcname in sorted(files):
            info = zipfile.ZipInfo(arcname, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[arcname])
    _cache["files"] = files
    _cache["zip"] = buf.getvalue()


def _cached(name: str) -> object:
    with _lock:
        if name not in _cache:
            _build()
        return _cache[name]


def runtime_bundle() -> bytes:
    """The runtime as a zip (built once per process)."""
    return _cached("zip")  # type: ignore[return-value]


def bundle_digest() -> str:
    """sha256 over the names and contents of the files the bundle is made from: the runtime's version
    (in the step cache key; names the staged copy). Read once per process, no zip built."""
    sources = _sources()
    with _lock:
        if "digest" not in _cache:
            digest = hashlib.sha256()
            for arcname in sorted(sources):
                digest.update(arcname.encode() + b"\0" + hashlib.sha256(sources[arcname]).digest())
            _cache["digest"] = digest.hexdigest()
        return _cache["digest"]  # type: ignore[return-value]


def runtime_env() -> dict[str, str]:
    """The environment variable that carries the zip for ``bootstrap_command``."""
    with _lock:
        if "b64" not in _cache:
            if "zip" not in _cache:
                _build()
            _cache["b64"] = base64.b64encode(_cache["zip"]).decode("ascii")  # type: ignore[arg-type]
        value = _cache["b64"]
    if len(value) > MAX_ENV_VALUE:  # type: ignore[arg-type]
        raise ComputeError(
            f"the runtime bundle is {len(value)} bytes in base64, over the {MAX_ENV_VALUE}-byte limit of one "  # type: ignore[arg-type]
            "environment variable; keep airflow_mlpipe/runtime small"
        )
    return {RUNTIME_ZIP_ENV: value}  # type: ignore[dict-item]


def bootstrap_command(python: str = "python3") -> list[str]:
    """argv that runs the launcher from the zip in ``MLPIPE_RUNTIME_ZIP_B64`` (no install needed)."""
    return [python, "-u", "-c", _BOOTSTRAP]


def launch_command(python: str = "python3") -> list[str]:
    """argv that runs the launcher from an installed or staged (``PYTHONPATH``) runtime; unlike
    ``python -m``, the cwd (the user's snapshot) is not put on ``sys.path`` before the launcher loads."""
    return [python, "-u", "-c", _UNSHADOW + _RUN_LAUNCHER]


def stage_runtime(root: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Unpack the runtime under ``root`` (default ``$MLPIPE_RUNTIME_DIR`` or
    ``~/.cache/airflow_mlpipe/runtime``) in a directory named by the bundle digest; return the
    directory to put on ``PYTHONPATH``. Written once (temp dir + atomic rename), then reused."""
    base = pathlib.Path(
        root or os.environ.get(RUNTIME_DIR_ENV) or pathlib.Path.home() / ".cache" / "airflow_mlpipe" / "runtime"
    )
    target = base / bundle_digest()[:20]
    if (target / "airflow_mlpipe" / "runtime" / "launch.py").is_file():
        return target
    base.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = _cached("files")  # type: ignore[assignment]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        for arcname, content in files.items():
            dest = tmp / arcname
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "airflow_mlpipe" / "runtime" / "launch.py").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
