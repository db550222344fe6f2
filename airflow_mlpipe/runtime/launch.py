"""``python -m airflow_mlpipe.runtime.launch``: run one step inside its process.

Standard library only. Reads the launch context from ``MLPIPE_CONTEXT`` (docs/internals.md) and,
from the current directory (a fresh scratch directory):

1. unpacks the snapshot (unless ``snapshot`` is null: local compute pre-unpacked it);
2. materialises inputs: read-only copies under ./.mlpipe/inputs (downloaded, or copied from a local datastore),
   checked against the digest the cache key used;
3. creates one empty directory per output (./.mlpipe/outputs/NAME);
4. runs the script with ``runpy.run_path`` and ``sys.argv = [script, *argv]``;
5. on success uploads each output with its manifest last, and ./outputs to ``kept_outputs_key``;
6. writes ``result_key`` (succeeded, or failed with the exit code and the tail of the log).

With a ``lease`` in the context (``runtime/lease.py``), a watcher stops the step (its whole process group)
as soon as a newer attempt claims the step or the task stops beating, and each output manifest is written
only after the lease is checked once more: a stale or orphaned attempt commits nothing.

The process exits with the script's exit code; 2 when the runtime itself could not prepare the
step or commit its outputs (``phase`` in result.json tells which).
"""

from __future__ import annotations

import collections
import datetime
import json
import os
import pathlib
import platform
import runpy
import signal
import sys
import threading
import time
import traceback
from typing import Any

from airflow_mlpipe.runtime import context as step_context
from airflow_mlpipe.runtime.arguments import resolve_argv
from airflow_mlpipe.runtime.context import CONTEXT_ENV, METRIC_PREFIX, PARENT_PID_ENV, PATHS_ENV
from airflow_mlpipe.runtime.lease import LeaseLost, LeaseWatch
from airflow_mlpipe.runtime.materialize import (
    RuntimeStepError,
    commit_outputs,
    materialise_inputs,
    open_workspace,
    prepare_outputs,
    unpack_snapshot,
    upload_kept_outputs,
)

RUNTIME_FAILURE = 2
LEASE_LOST = 3  # the step was stopped because this attempt no longer owns it
TAIL_LINES = 50


class _Terminated(BaseException):
    """SIGTERM arrived while the script ran (the compute target is stopping the step)."""


class _LogTail:
    """The last ``TAIL_LINES`` lines written to stdout/stderr by this process."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._partial = ""
        self._lock = threading.Lock()

    def feed(self, text: str) -> None:
        with self._lock:
            chunks = (self._partial + text).split("\n")
            self._partial = chunks.pop()[-4096:]
            for line in chunks:
                if not line.startswith(METRIC_PREFIX):
                    self.lines.append(line[-1000:])

    def snapshot(self) -> list[str]:
        with self._lock:
            extra = [self._partial] if self._partial else []
            return list(self.lines) + extra


class _TeeStream:
    """Wraps sys.stdout/sys.stderr: forwards everything (line-buffered) and feeds the tail."""

    def __init__(self, stream: Any, tail: _LogTail) -> None:
        self._stream = stream
        self._tail = tail

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        self._tail.feed(text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _install_streams(tail: _LogTail) -> None:
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        try:
            stream.reconfigure(line_buffering=True, errors="backslashreplace")
        except (AttributeError, ValueError):
            pass
        setattr(sys, name, _TeeStream(stream, tail))


def run_script(script: pathlib.Path, args: list[str]) -> int:
    """Run ``script`` as ``__main__`` in this process; return its exit code (tracebacks printed)."""
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))

    def on_sigterm(signum: int, frame: Any) -> None:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        traceback.print_exc()
        return 130
    except _Terminated:
        print("mlpipe: the step was terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except BaseException:  # noqa: B036 - a script's error must become an exit code, not a crash
        traceback.print_exc()
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.argv, sys.path[:] = saved_argv, saved_path
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass


class Launcher:
    """One step execution; ``main()`` is the command-line entry point."""

    def __init__(self, doc: dict[str, Any], workdir: pathlib.Path, tail: _LogTail | None = None) -> None:
        self.doc = doc
        self.workdir = workdir
        self.tail = tail or _LogTail()
        self.datastore: Any = None
        self.started = _now()
        self._t0 = time.monotonic()
        self.watch: LeaseWatch | None = None

    def run(self) -> int:
        doc = self.doc
        try:
            if doc.get("format", 1) != 1:
                raise RuntimeStepError(f"unsupported launch context format {doc.get('format')!r} (expected 1)")
            for field in ("workspace", "script"):
                if not doc.get(field):
                    raise RuntimeStepError(f"the launch context has no {field!r}")
            self.datastore = open_workspace(doc["workspace"])
            snapshot = doc.get("snapshot")
            if snapshot:
                unpack_snapshot(self.datastore, snapshot["key"], self.workdir)
            inputs = materialise_inputs(self.datastore, doc.get("inputs") or {}, self.workdir)
            outputs = prepare_outputs(doc.get("outputs") or {}, self.workdir)
            args = resolve_argv(doc.get("argv") or [], inputs, outputs)
            script = (self.workdir / doc["script"]).resolve()
            if not script.is_file():
                raise RuntimeStepError(f"script {doc['script']!r} not found in the step's source directory {self.workdir}")
        except Exception as exc:  # any preparation failure becomes a failed result, not a crash
            print(f"mlpipe: could not prepare step {doc.get('step')!r}: {exc}", file=sys.stderr, flush=True)
            self._finish_failed(RUNTIME_FAILURE, "prepare", str(exc))
            return RUNTIME_FAILURE

        if doc.get("lease"):
            self.watch = LeaseWatch(self.datastore, doc["lease"], self._lease_lost).start()
        step_context.configure(doc, inputs, outputs)
        os.environ[PATHS_ENV] = json.dumps(
            {"inputs": {k: str(v) for k, v in inputs.items()}, "outputs": {k: str(v) for k, v in outputs.items()}}
        )
        code = run_script(script, args)
        if code != 0:
            self._keep_outputs_best_effort()
            self._finish_failed(code, "script", f"the script exited with code {code}")
            return code
        fence = self.watch.check if self.watch is not None else None
        try:
            if fence is not None:
                fence()
            committed = commit_outputs(self.datastore, doc.get("outputs") or {}, outputs, fence=fence)
            kept = upload_kept_outputs(self.datastore, self.workdir, doc.get("kept_outputs_key"))
        except LeaseLost as exc:
            print(f"mlpipe: step {doc.get('step')!r} commits nothing: {exc}", file=sys.stderr, flush=True)
            self._finish_failed(LEASE_LOST, "lease", str(exc))
            return LEASE_LOST
        except Exception as exc:  # the outputs stay absent (no manifest); say why
            print(f"mlpipe: could not commit the outputs of step {doc.get('step')!r}: {exc}", file=sys.stderr, flush=True)
            self._finish_failed(RUNTIME_FAILURE, "commit", str(exc))
            return RUNTIME_FAILURE
        result = self._base_result("succeeded", 0)
        result["outputs"] = committed
        result["kept_outputs"] = {"key": doc.get("kept_outputs_key"), "files": kept}
        if not self._write_result(result):
            return RUNTIME_FAILURE
        return 0

    def _lease_lost(self, reason: str) -> None:
        """Called by the lease watcher: stop this step now, commit nothing (the process group dies)."""
        print(f"mlpipe: stopping step {self.doc.get('step')!r}: {reason}; nothing is committed",
              file=sys.stderr, flush=True)
        self._finish_failed(LEASE_LOST, "lease", reason)
        stop_process_tree(LEASE_LOST)

    # -- results ------------------------------------------------------------------------------
    def _base_result(self, status: str, exit_code: int) -> dict[str, Any]:
        doc = self.doc
        return {
            "format": 1,
            "status": status,
            "exit_code": exit_code,
            "pipeline": doc.get("pipeline"),
            "run_id": doc.get("run_id"),
            "step": doc.get("step"),
            "attempt": doc.get("attempt"),
            "started": self.started,
            "finished": _now(),
            "duration_s": round(time.monotonic() - self._t0, 3),
            "metrics": step_context.metrics,
            "metric_series": step_context.metric_series,
            "params_logged": step_context.params_logged,
            "tags": step_context.tags,
            "host": platform.node(),
            "python": platform.python_version(),
        }

    def _finish_failed(self, exit_code: int, phase: str, error: str) -> None:
        result = self._base_result("failed", exit_code)
        result.update({"phase": phase, "error": error, "log_tail": self.tail.snapshot()})
        self._write_result(result)

    def _write_result(self, result: dict[str, Any]) -> bool:
        key = self.doc.get("result_key")
        if not key or self.datastore is None:
            return True
        try:
            self.datastore.put_json(key.strip("/"), result)
        except Exception as exc:  # the step's outcome is the exit code; the record is best effort
            print(f"mlpipe: could not write {key}: {exc}", file=sys.stderr, flush=True)
            return False
        return True

    def _keep_outputs_best_effort(self) -> None:
        try:
            upload_kept_outputs(self.datastore, self.workdir, self.doc.get("kept_outputs_key"))
        except Exception as exc:
            print(f"mlpipe: could not keep ./outputs of the failed step: {exc}", file=sys.stderr, flush=True)


def stop_process_tree(code: int) -> None:
    """End this step process and everything it started: the process group when this process leads one
    (local compute starts the step in a session of its own), else just this process (a container's PID 1:
    its exit stops the container)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if os.getpid() != 1 and os.getpgrp() == os.getpid():
        try:
            os.killpg(os.getpid(), signal.SIGKILL)
        except OSError:
            pass
    os._exit(code)


def die_with_parent() -> None:
    """Local compute: ask Linux to SIGKILL this process when the task process that started it dies
    (``PR_SET_PDEATHSIG``), and end now if it already has. The reaper stops the rest of the group."""
    expected = os.environ.pop(PARENT_PID_ENV, None)
    if not expected or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != expected:  # the parent died before the request took effect
        os._exit(128 + signal.SIGKILL)


def main() -> int:
    die_with_parent()
    tail = _LogTail()
    _install_streams(tail)
    raw = os.environ.get(CONTEXT_ENV)
    if not raw:
        print(f"mlpipe: {CONTEXT_ENV} is not set; this module runs inside a step started by airflow_mlpipe", file=sys.stderr)
        return RUNTIME_FAILURE
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        print(f"mlpipe: {CONTEXT_ENV} is not valid JSON: {exc}", file=sys.stderr)
        return RUNTIME_FAILURE
    if not isinstance(doc, dict):
        print(f"mlpipe: {CONTEXT_ENV} must be a JSON object", file=sys.stderr)
        return RUNTIME_FAILURE
    return Launcher(doc, pathlib.Path.cwd(), tail).run()


if __name__ == "__main__":
    code = main()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for _stream in (sys.stdout, sys.stderr):
        try:
            _stream.flush()
        except (OSError, ValueError):
            pass
    # os._exit: do not wait for non-daemon threads a script left behind, and keep the exit code exact.
    os._exit(code & 0xFF if code >= 0 else 1)
