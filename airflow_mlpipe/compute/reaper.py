"""The reaper: a small watcher process that cleans up after a step whose task process died.

A compute target starts one per step run (``Reaper.start(actions)``), in a session of its own so that
whatever kills the task's process group spares it. Its stdin is a pipe whose only write end the task
process holds. When the step ends normally the target calls ``release()``: the reaper reads ``done`` and
exits, doing nothing. When the task process dies (SIGKILL, the OOM killer, a worker shut down hard), the
pipe closes without ``done`` and the reaper carries out its actions, in order:

- ``pgid``: SIGTERM to the step's process group, SIGKILL after ``grace`` seconds (local compute);
- ``docker``: ``{"base_url", "container", "grace"}``: stop and remove the step's container;
- ``dirs``: remove these directories (the step's scratch folder).

A step therefore never outlives its task, and a killed attempt leaves no scratch folder behind. The
runtime's lease (``runtime/lease.py``) is the second line: it stops a step whose task stopped beating,
wherever it runs, and fences commits of stale attempts.

Run as ``python -m airflow_mlpipe.compute.reaper``; standard library only (plus the ``docker`` client for
the docker action).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

DONE = b"done\n"


class Reaper:
    """The task-process side of a reaper."""

    def __init__(self, proc: subprocess.Popen[bytes] | None):
        self._proc = proc

    @classmethod
    def start(cls, actions: dict[str, Any]) -> Reaper:
        """Start a reaper for ``actions``. Never raises: without a reaper, the lease still stops the step."""
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "airflow_mlpipe.compute.reaper"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True,
                env={**os.environ, "MLPIPE_REAPER_ACTIONS": json.dumps(actions)},
            )
        except OSError:
            return cls(None)
        return cls(proc)

    def release(self) -> None:
        """The step ended under our watch: the reaper exits without acting."""
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        try:
            proc.stdin.write(DONE)
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _kill_group(pgid: int, grace: float) -> None:
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_container(spec: dict[str, Any]) -> None:
    import docker

    client = docker.DockerClient(base_url=spec["base_url"]) if spec.get("base_url") else docker.from_env()
    try:
        container = client.containers.get(spec["container"])
        try:
            container.stop(timeout=int(spec.get("grace", 10)))
        finally:
            container.remove(force=True)
    except docker.errors.NotFound:
        pass
    finally:
        client.close()


def act(actions: dict[str, Any]) -> None:
    """Carry out ``actions`` (each one best effort: a failure of one does not skip the others)."""
    grace = float(actions.get("grace", 10))
    if actions.get("pgid"):
        _kill_group(int(actions["pgid"]), grace)
    if actions.get("docker"):
        try:
            _remove_container(actions["docker"])
        except Exception as exc:  # noqa: BLE001 - the lease stops the step anyway; say why here
            print(f"mlpipe reaper: cannot remove container {actions['docker'].get('container')}: {exc}",
                  file=sys.stderr)
    for path in actions.get("dirs") or []:
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    actions = json.loads(os.environ.get("MLPIPE_REAPER_ACTIONS") or "{}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the worker is not the task's death
    data = b""
    while True:
        try:
            chunk = os.read(0, 64)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    if data.startswith(DONE):
        return 0
    act(actions)
    return 0


if __name__ == "__main__":
    sys.exit(main())
