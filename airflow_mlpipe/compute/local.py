"""``local`` compute: the step runs as a subprocess of the worker, in an isolated virtualenv.

- argv list, no shell: ``<venv>/bin/python -u -c <run airflow_mlpipe.runtime.launch>``
  (``runtime.bundle.launch_command``: like ``-m``, but the user's cwd is kept off ``sys.path``);
- a new session (process group), so ``kill()`` stops the whole tree: SIGTERM, then SIGKILL after
  ``kill_grace`` seconds (config, default 10);
- the step dies with its task: the launcher asks the kernel for SIGKILL when its parent (the task
  process) dies, and a reaper (``compute/reaper.py``) then stops the rest of the group and removes the
  scratch directory;
- cwd: ``request.workdir`` if given (the caller owns it), else a fresh scratch directory under
  ``scratch_dir`` (config, else ``$MLPIPE_SCRATCH_DIR``, else ``$TMPDIR/mlpipe-scratch``) removed
  afterwards unless ``keep_scratch`` (config) or ``MLPIPE_KEEP_SCRATCH=1``;
- environment: a minimal subset of the worker's (PATH, HOME, locale, TMPDIR, proxy and CA
  settings, plus config ``inherit_env`` names), the request's ``env``, ``MLPIPE_CONTEXT``, and
  ``PYTHONPATH`` = the staged runtime (``runtime.bundle.stage_runtime``);
- interpreter: a venv built once per environment hash (``venvs.ensure_venv``); config
  ``isolated: false`` uses ``request.python`` directly instead (no venv);
- identity (cache key): the interpreter's real path and version and the installed packages as the
  venv's marker records them (``venvs.venv_identity``; ``interpreter_identity`` without a venv), the
  request's env (values as digests) and the ``inherit_env`` names (their values come from the worker,
  like PATH and HOME, and stay out).

Config keys: ``venv_dir``, ``runtime_dir``, ``scratch_dir``, ``keep_scratch``, ``kill_grace``,
``inherit_env``, ``isolated``, ``use_uv``.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any

from airflow_mlpipe.compute.base import (
    ComputeTarget,
    LineSplitter,
    LogCallback,
    StepRequest,
    StepTimedOut,
    env_identity,
    exit_code_from_returncode,
    start_timeout,
)
from airflow_mlpipe.compute.reaper import Reaper
from airflow_mlpipe.errors import ComputeError, ComputeSetupError
from airflow_mlpipe.runtime.context import PARENT_PID_ENV

SCRATCH_DIR_ENV = "MLPIPE_SCRATCH_DIR"  # the worker-wide default of ``scratch_dir``

INHERITED_ENV = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CUDA_VISIBLE_DEVICES",
)


def _safe_name(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:limit] or "x"


class LocalTarget(ComputeTarget):
    type_name = "local"

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._killer: threading.Thread | None = None
        self.last_scratch: pathlib.Path | None = None
        self.venv: Any = None

    # -- preparation ------------------------------------------------------------------------------
    def prepare_python(self, request: StepRequest, on_log: LogCallback | None = None) -> str:
        """The interpreter the step runs with: its cached venv's python (built on first use)."""
        if not self.config.get("isolated", True):
            if request.requirements or request.requirements_file:
                raise ComputeSetupError(
                    f"step {request.step!r}: the local compute has isolated=false but the environment "
                    "has requirements; remove them or use an isolated environment"
                )
            found = shutil.which(request.python) if os.sep not in request.python else request.python
            if not found:
                raise ComputeSetupError(f"python interpreter {request.python!r} not found on this worker")
            return found
        from airflow_mlpipe.compute.venvs import ensure_venv

        self.venv = ensure_venv(
            request.python,
            request.requirements,
            request.requirements_file,
            cache_dir=self.config.get("venv_dir"),
            use_uv=self.config.get("use_uv"),
            on_log=on_log,
        )
        return str(self.venv.python)

    def identity(self, request: StepRequest, on_log: LogCallback | None = None) -> dict[str, Any]:
        """The venv as built (built now if missing: the step needs it anyway), or the interpreter itself
        with ``isolated: false``; read from a marker file on later calls, no subprocess."""
        from airflow_mlpipe.compute.venvs import interpreter_identity, venv_identity

        if self.config.get("isolated", True):
            self.prepare_python(request, on_log)
            environment = venv_identity(self.venv)
        else:
            environment = interpreter_identity(request.python, cache_dir=self.config.get("venv_dir"))
        return {
            "environment": {**environment, "env": env_identity(request.env)},
            "compute": {"type": self.type_name, "inherit_env": sorted(self.config.get("inherit_env") or [])},
        }

    def build_env(self, request: StepRequest, runtime_dir: pathlib.Path) -> dict[str, str]:
        names = list(INHERITED_ENV) + list(self.config.get("inherit_env") or [])
        env = {name: os.environ[name] for name in names if name in os.environ}
        env.setdefault("PATH", os.defpath)
        if self.venv is not None:
            env["VIRTUAL_ENV"] = str(self.venv.path)
            env["PATH"] = f"{self.venv.path / 'bin'}{os.pathsep}{env['PATH']}"
        env.update(request.env)
        env.update(request.credentials)
        env["MLPIPE_CONTEXT"] = json.dumps(request.context, sort_keys=True)
        env["PYTHONPATH"] = str(runtime_dir)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONNOUSERSITE"] = "1"
        env[PARENT_PID_ENV] = str(os.getpid())  # the launcher dies with this process (runtime/launch.py)
        return env

    def _scratch(self, request: StepRequest) -> tuple[pathlib.Path, bool]:
        if request.workdir:
            path = pathlib.Path(request.workdir)
            if not path.is_dir():
                raise ComputeError(f"step {request.step!r}: workdir {request.workdir!r} does not exist")
            return path, False
        base = pathlib.Path(self.config.get("scratch_dir") or os.environ.get(SCRATCH_DIR_ENV)
                            or pathlib.Path(tempfile.gettempdir()) / "mlpipe-scratch")
        base.mkdir(parents=True, exist_ok=True)
        prefix = f"{_safe_name(request.pipeline)}-{_safe_name(request.step)}-a{request.attempt}-"
        return pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=base)), True

    # -- run / kill ------------------------------------------------------------------------------
    def run(self, request: StepRequest, on_log: LogCallback) -> int:
        from airflow_mlpipe.runtime.bundle import launch_command, stage_runtime

        if self.killed:
            raise ComputeError(f"step {request.step!r} was killed before it started")
        python = self.prepare_python(request, on_log)
        runtime_dir = stage_runtime(self.config.get("runtime_dir"))
        cwd, owned = self._scratch(request)
        self.last_scratch = cwd
        env = self.build_env(request, runtime_dir)
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        reaper: Reaper | None = None
        try:
            with self._lock:
                if self.killed:
                    raise ComputeError(f"step {request.step!r} was killed before it started")
                try:
                    self._proc = subprocess.Popen(
                        launch_command(python),
                        cwd=cwd,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                        close_fds=True,
                    )
                except OSError as exc:
                    raise ComputeError(f"step {request.step!r}: cannot start {python}: {exc}") from exc
            proc = self._proc
            reaper = Reaper.start({"pgid": proc.pid, "dirs": [str(cwd)] if owned and not self._keep_scratch() else [],
                                   "grace": float(self.config.get("kill_grace", 10))})
            timer = start_timeout(request.timeout, timed_out, self.kill)
            splitter = LineSplitter(on_log)
            stdout = proc.stdout
            if stdout is None:
                raise ComputeError("subprocess without a stdout pipe")
            self._pump(proc, stdout.fileno(), splitter)
            splitter.close()
            stdout.close()
            code = exit_code_from_returncode(proc.wait())
        finally:
            if timer is not None:
                timer.cancel()
            self._reap_group()
            if owned and not self._keep_scratch():
                shutil.rmtree(cwd, ignore_errors=True)
            if reaper is not None:
                reaper.release()
        if timed_out.is_set():
            raise StepTimedOut(
                f"step {request.step!r} of pipeline {request.pipeline!r} ran longer than its timeout "
                f"({request.timeout:g} s) and was stopped; raise 'timeout' or make the step faster",
                timeout=request.timeout,
            )
        return code

    def _keep_scratch(self) -> bool:
        return bool(self.config.get("keep_scratch")) or os.environ.get("MLPIPE_KEEP_SCRATCH") == "1"

    def _pump(self, proc: subprocess.Popen[bytes], fd: int, splitter: LineSplitter) -> None:
        """Forward output as it comes until EOF. Once the launcher has exited, whatever it left in
        its process group is killed; a leftover that escaped the group and keeps the pipe open
        cannot hold the step for more than a couple of seconds."""
        exited_at: float | None = None
        while True:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                splitter.feed(chunk)
                continue
            if proc.poll() is not None:
                if exited_at is None:
                    exited_at = time.monotonic()
                    self._reap_group()
                elif time.monotonic() - exited_at > 2.0:
                    return

    def _reap_group(self) -> None:
        """After the launcher exits, stop anything it left running in its process group."""
        proc = self._proc
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        self._kill_requested.set()
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None or self._killer is not None:
                return
            grace = float(self.config.get("kill_grace", 10))
            self._signal_group(proc, signal.SIGTERM)
            self._killer = threading.Thread(target=self._escalate, args=(proc, grace), daemon=True)
            self._killer.start()

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)  # start_new_session: the pgid is the launcher's pid
        except (ProcessLookupError, PermissionError):
            pass

    def _escalate(self, proc: subprocess.Popen[bytes], grace: float) -> None:
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        self._signal_group(proc, signal.SIGKILL)
