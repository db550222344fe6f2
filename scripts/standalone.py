"""Start and stop a real ``airflow standalone`` (SQLite, LocalExecutor) on a folder of DAGs.

Used by ``make demo`` (scripts/demo.py) and by the end-to-end tests. Everything lives under one home
folder: AIRFLOW_HOME, the workspace, the venv cache, the log and the record of the running server.

One home never gets a second Airflow: ``start`` takes the home's lock (``standalone.lock``, fcntl), then
looks at the recorded server (``standalone.json``: pid, process start time and command line, port). If that
very process still lives (not just any process that got its pid since), it is reused: ``start`` waits for
it to answer and returns it with ``reused: True``. Else it starts one (refusing a port another program
holds). A start waits as long as the server
process lives and makes progress (its log grows), saying what it waits for through ``on_wait``; it gives up
after ``timeout`` seconds without progress. ``stop`` stops the server's process group and every process it
started in a session of its own (step processes of the local compute target).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import httpx

REPO = pathlib.Path(__file__).resolve().parent.parent
INFO = "standalone.json"
PID = "standalone.pid"
LOCK = "standalone.lock"
LOG = "standalone.log"
MAX_START = 1800.0  # seconds: even a start that keeps making progress ends here

WaitCallback = Callable[[str], None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def airflow_env(home: pathlib.Path, dags: pathlib.Path, port: int, workspace: str | None = None,
                extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of this Airflow: settings as AIRFLOW__ variables, the workspace
    as the ``mlpipe_default`` connection."""
    bin_dir = str(pathlib.Path(sys.executable).parent)
    workspace = workspace or (home / "workspace").as_uri()
    env = dict(os.environ)
    env.update(
        {
            "PATH": f"{bin_dir}:{env.get('PATH', '')}",
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
            # a task's calls to the execution API wait up to 60 s (Airflow's default, 5 s, fails a task
            # before it runs when a busy machine keeps the API server from answering in time)
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_MLPIPE_DEFAULT": json.dumps({"conn_type": "mlpipe", "extra": {"workspace": workspace}}),
            "MLPIPE_CACHE_DIR": str(home / "cache"),
            "MLPIPE_VENV_DIR": str(home / "venvs"),
            "MLPIPE_SCRATCH_DIR": str(home / "scratch"),
        }
    )
    env.update(extra or {})
    return env


# ------------------------------------------------------------------------------ processes (Linux /proc)
def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first); None if no such live process."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else fields  # a zombie has ended


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot): with the pid, it names one process for good."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def cmdline(pid: int) -> list[str]:
    try:
        raw = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...), whatever session they run in."""
    children: dict[int, list[int]] = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def recorded(home: pathlib.Path) -> dict | None:
    """The server recorded under ``home`` if that very process still runs, else None. The pid and the
    process's start time decide (a recycled pid belongs to a process that started later); the command line
    is recorded to say what runs."""
    try:
        info = json.loads((home / INFO).read_text())
        pid = int(info["pid"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    if info.get("start_time") is None or start_time(pid) != info["start_time"]:
        return None
    return info


@contextlib.contextmanager
def home_lock(home: pathlib.Path, on_wait: WaitCallback | None = None) -> Iterator[None]:
    """Hold ``home``'s lock (one start or stop at a time per home); waits, saying for whom."""
    home.mkdir(parents=True, exist_ok=True)
    with open(home / LOCK, "a+") as lock:
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "?"
                if on_wait:
                    on_wait(f"waiting for another start or stop of Airflow in {home} (pid {holder}, "
                            f"{time.monotonic() - t0:.0f} s)")
                time.sleep(0.5)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ start / stop
def start(home: pathlib.Path, dags: pathlib.Path, port: int | None = None, workspace: str | None = None,
          extra_env: dict[str, str] | None = None, timeout: float = 180, on_wait: WaitCallback | None = None,
          command: list[str] | None = None) -> dict[str, object]:
    """Airflow standalone for ``home``: the one already running there (``reused: True``) or a new one.
    Returns {url, username, password, pid, env, log, port, reused}. ``timeout``: seconds without progress
    before giving up. ``command`` replaces ``airflow standalone`` (tests of this module)."""
    with home_lock(home, on_wait):  # decide, start and record under the lock; wait for readiness after it
        info = recorded(home)
        reused = info is not None
        if reused:
            if on_wait:
                on_wait(f"Airflow is already running in {home} (pid {info['pid']}, http://localhost:{info['port']}): "
                        "reusing it")
        else:
            info = _spawn(home, dags, port, workspace, extra_env, on_wait, command)
    env = airflow_env(home, dags, int(info["port"]), workspace, extra_env)
    return {**_wait_ready(home, info, env, timeout, on_wait, started_here=not reused), "reused": reused}


def _spawn(home: pathlib.Path, dags: pathlib.Path, port: int | None, workspace: str | None,
           extra_env: dict[str, str] | None, on_wait: WaitCallback | None, command: list[str] | None) -> dict:
    """Start the server process and record it (the caller holds the home's lock); the record."""
    for name in (INFO, PID):
        (home / name).unlink(missing_ok=True)  # a record of a server that is gone
    port = port or free_port()
    if port_in_use(port):
        raise RuntimeError(f"port {port} is in use by another program (not an Airflow of {home}); "
                           "pick another one (PORT=8090 make demo) or stop that program")
    env = airflow_env(home, dags, port, workspace, extra_env)
    with open(home / LOG, "ab") as log:  # the children keep their own copies of the descriptor
        if command is None:
            if on_wait:
                on_wait("migrating the Airflow database")
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                           stdout=log, stderr=subprocess.STDOUT)
            command = [str(pathlib.Path(sys.executable).parent / "airflow"), "standalone"]
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    mine = cmdline(os.getpid())
    for _ in range(100):  # until exec replaced the forked child's command line (for the record)
        if cmdline(proc.pid) != mine or proc.poll() is not None:
            break
        time.sleep(0.02)
    info = {"port": port, "pid": proc.pid, "start_time": start_time(proc.pid), "cmdline": cmdline(proc.pid),
            "started": time.time()}
    (home / PID).write_text(str(proc.pid))
    (home / INFO).write_text(json.dumps(info))
    return info


def _wait_ready(home: pathlib.Path, info: dict, env: dict[str, str], timeout: float,
                on_wait: WaitCallback | None, started_here: bool) -> dict[str, object]:
    """Wait until the server answers its health check and its admin password is written, as long as its
    process lives and its log grows (progress); then its connection details."""
    pid, port = int(info["pid"]), int(info["port"])
    url = f"http://localhost:{port}"
    log_path = home / LOG
    passwords = pathlib.Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    t0 = last_progress = time.monotonic()
    last_size = log_path.stat().st_size if log_path.exists() else 0
    what = "the API server"
    while True:
        current = recorded(home)
        if current is None or int(current["pid"]) != pid:
            _reap(pid)
            raise RuntimeError(f"airflow standalone (pid {pid}) exited (or was stopped) while starting; see {log_path}")
        try:
            answered = httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            answered = False
        if answered:
            what = "the admin password file"
            if passwords.exists():
                break
        size = log_path.stat().st_size if log_path.exists() else 0
        now = time.monotonic()
        if size != last_size:
            last_size, last_progress = size, now
        if now - last_progress > timeout or now - t0 > MAX_START:
            if started_here:
                stop(home)
            raise RuntimeError(f"airflow standalone (pid {pid}) made no progress for {now - last_progress:.0f} s "
                               f"while waiting for {what} on {url}; see {log_path}")
        if on_wait:
            on_wait(f"waiting for {what} (pid {pid}, {now - t0:.0f} s)")
        time.sleep(1)
    password = json.loads(passwords.read_text())["admin"]
    return {"url": url, "username": "admin", "password": password, "pid": pid, "env": env, "log": str(log_path),
            "port": port}


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status if it is our child (else it lingers as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _signal_all(groups: set[int], pids: set[int], sig: int) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def stop(home: pathlib.Path, timeout: float = 30) -> bool:
    """Stop the standalone started under ``home``: its process group and every process it started in a
    session of its own. True if one was running."""
    with home_lock(home):
        info = recorded(home)
        for name in (INFO, PID):
            (home / name).unlink(missing_ok=True)
        if info is None:
            return False
        pid = int(info["pid"])
        pids = {pid, *descendants(pid)}
        groups = {pid}
        for each in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                groups.add(os.getpgid(each))
        _signal_all(groups, pids, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(pid)
            if not any(_stat(each) for each in pids):
                break
            time.sleep(0.2)
        else:
            _signal_all(groups, {each for each in pids if _stat(each)}, signal.SIGKILL)
        _reap(pid)
        return True


def wait_for_dag(client, dag_id: str, timeout: float = 120) -> dict:
    """Poll until the dag processor has parsed ``dag_id``."""
    from airflow_mlpipe.client import AirflowApiError

    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.get_dag(dag_id)
        except AirflowApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(1)


def main() -> int:
    """``python scripts/standalone.py start|stop --home DIR [--dags DIR] [--port N]`` (start prints JSON)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--home", type=pathlib.Path, required=True)
    parser.add_argument("--dags", type=pathlib.Path, default=REPO / "dags_examples")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args()
    if args.action == "stop":
        print("stopped" if stop(args.home) else "not running")
        return 0
    server = start(args.home, args.dags, port=args.port, on_wait=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps({k: v for k, v in server.items() if k != "env"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
