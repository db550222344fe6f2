"""Start and stop a real ``airflow standalone`` (SQLite, LocalExecutor) on a folder of DAGs.

Used by ``make demo`` (scripts/demo.py) and by the end-to-end tests. Everything lives under one home
folder: AIRFLOW_HOME, the workspace, the venv cache, the log and the pid file.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import httpx

REPO = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_MLPIPE_DEFAULT": json.dumps({"conn_type": "mlpipe", "extra": {"workspace": workspace}}),
            "MLPIPE_CACHE_DIR": str(home / "cache"),
            "MLPIPE_VENV_DIR": str(home / "venvs"),
            "MLPIPE_SCRATCH_DIR": str(home / "scratch"),
        }
    )
    env.update(extra or {})
    return env


def start(home: pathlib.Path, dags: pathlib.Path, port: int | None = None, workspace: str | None = None,
          extra_env: dict[str, str] | None = None, timeout: float = 180) -> dict[str, object]:
    """Start ``airflow standalone`` in the background; return {url, username, password, pid, env, log}."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = airflow_env(home, dags, port, workspace, extra_env)
    log_path = home / "standalone.log"
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child process
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                   stdout=log, stderr=subprocess.STDOUT)
    proc = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / "airflow"), "standalone"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    (home / "standalone.pid").write_text(str(proc.pid))
    (home / "standalone.json").write_text(json.dumps({"port": port, "pid": proc.pid}))
    url = f"http://localhost:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(home)
            raise RuntimeError(f"airflow standalone did not answer on {url} within {timeout:.0f}s; see {log_path}")
        time.sleep(1)
    passwords = pathlib.Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    while not passwords.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    password = json.loads(passwords.read_text())["admin"]
    return {"url": url, "username": "admin", "password": password, "pid": proc.pid, "env": env,
            "log": str(log_path), "port": port}


def stop(home: pathlib.Path, timeout: float = 30) -> bool:
    """Stop the standalone started under ``home`` (its whole process group). True if one was running."""
    pid_file = home / "standalone.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_file.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it when we started it (else it lingers as a zombie)
        except ChildProcessError:
            pass
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    pid_file.unlink(missing_ok=True)
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
