"""Start and stop the distributed shape of airflow-mlpipe on this machine, with local processes instead of
containers (what ``docker-compose.yaml`` describes, DESIGN.md section 6):

- metadata DB: a fresh PostgreSQL database ``mlpipe_it_<random>`` on 127.0.0.1:5432 (dropped at stop);
- CeleryExecutor, broker Redis on 127.0.0.1:6379 (a free DB number, flushed at stop), result backend
  ``db+postgresql+psycopg2`` in the same database;
- ``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and TWO ``airflow celery worker``
  processes (``--celery-hostname worker-N@%h --concurrency 2 --skip-serve-logs``: task logs are files in
  the shared AIRFLOW_HOME, which the api-server reads), each worker with its own scratch, venv, runtime,
  file-hash cache and TMPDIR directories (as if on separate machines) and its own task-instance hostname
  (``[core] hostname_callable`` -> ``mlpipe-worker-N``: both share this machine's FQDN otherwise);
- one AIRFLOW_HOME and configuration for all of them (``AIRFLOW__*`` variables): a shared JWT secret, the
  execution API at ``http://localhost:PORT/execution/``, SimpleAuthManager user ``admin`` with a password
  written to our own passwords file;
- the workspace on a moto S3 server on loopback (started here unless an endpoint is given), connection
  ``mlpipe_default`` = ``{"login", "password", "extra": {"workspace", "endpoint_url", "region_name"}}``,
  seeded with the income example's data;
- DAGs folder: a temporary copy of ``dags_examples/`` in which the retraining pipeline (income_retrain_v2)
  runs its ``evaluate`` step on compute ``docker`` (podman's Docker Engine API, ``$DOCKER_HOST``) and has
  no weekly cron (else unpausing it starts a scheduled run of the same data next to the triggered one).

The S3 workspace needs boto3 wherever the step runtime runs: the ``plain`` environment of the copied
pipeline asks for ``requirements: [boto3]`` (local steps get it in their venv), and the ``docker`` compute
entry bind-mounts a read-only copy of this venv's pure-Python boto3 stack at ``/opt/mlpipe-deps`` with
``env: {PYTHONPATH: /opt/mlpipe-deps}`` (the step image has python3 only; a production image would
``pip install boto3``). Same approach as tests/compute/test_docker.py, no image build needed.

``alternate_workers=True`` adds an ``airflow_local_settings.py`` whose ``dag_policy`` puts each task on
queue ``mlpipe-worker-1`` or ``mlpipe-worker-2`` by the parity of its depth in the DAG (each worker
consumes ``default`` plus its own queue): consecutive steps then run on different workers, by design.

    python scripts/distributed.py start [--home DIR] [--port 8080]   # runs until Ctrl-C, then stops
    python scripts/distributed.py stop --home DIR                    # stops a shape started elsewhere

From Python: ``shape = distributed.start(home)`` ... ``shape.stop()``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from standalone import free_port  # this folder: the script's own, or put on sys.path by its importer

REPO = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
PG_DSN = "postgresql://postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
DEFAULT_DOCKER_HOST = "unix:///run/mlpipe-podman.sock"
S3_KEY, S3_SECRET, S3_REGION = "testing", "testing", "us-east-1"  # noqa: S105 - moto accepts any keys
DEPS_IN_CONTAINER = "/opt/mlpipe-deps"
BOTO3_STACK = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3")
WORKERS = ("worker-1", "worker-2")
DOCKER_STEP = "evaluate"

IDENTITY_MODULE = '''\
"""Written by scripts/distributed.py: the task-instance hostname of a Celery worker of the local shape."""

import os
import socket


def hostname():
    return os.environ.get("MLPIPE_WORKER_NAME") or socket.getfqdn()
'''

LOCAL_SETTINGS = '''\
"""Written by scripts/distributed.py (alternate_workers=True): each task goes to queue mlpipe-worker-1 or
mlpipe-worker-2 by the parity of its depth in the DAG, so consecutive steps run on different workers."""

QUEUES = ("mlpipe-worker-1", "mlpipe-worker-2")


def dag_policy(dag):
    depth = {}

    def level(task):
        if task.task_id not in depth:
            depth[task.task_id] = 1 + max((level(up) for up in task.upstream_list), default=-1)
        return depth[task.task_id]

    for task in dag.tasks:
        task.queue = QUEUES[level(task) % 2]
'''


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    if text.count(old) != 1:
        raise RuntimeError(f"{where}: expected exactly one {old!r}; did the example change?")
    return text.replace(old, new)


# ------------------------------------------------------------------------------------------ pieces
def prepare_dags(dest: pathlib.Path, deps: pathlib.Path, docker_step: str = DOCKER_STEP) -> pathlib.Path:
    """A copy of dags_examples/ where income_retrain (v2) runs ``docker_step`` on compute ``docker``, its
    environment has boto3 (S3 workspace) and its schedule is the dataset only (no weekly cron)."""
    shutil.copytree(REPO / "dags_examples", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    path = dest / "pipelines" / "income_retrain.yaml"
    text = path.read_text()
    # runs only when triggered: a cron schedule would add a scheduled run (of the same data) as soon as the
    # DAG is unpaused, racing the triggered one
    text = _replace_once(text, '  cron: "@weekly"\n', "", str(path))
    text = _replace_once(text, "    requirements: []\n",
                         "    requirements: [boto3]  # distributed shape: the S3 workspace needs boto3\n", str(path))
    text = _replace_once(
        text,
        "  docker: {type: docker, network_mode: host}\n",
        f"  docker: {{type: docker, network_mode: host, mounts: [\"{deps}:{DEPS_IN_CONTAINER}:ro\"],\n"
        f"           env: {{PYTHONPATH: {DEPS_IN_CONTAINER}}}}}\n",
        str(path),
    )
    # the one-line change: the step runs in a container
    text = _replace_once(text, f"  {docker_step}:\n    script:", f"  {docker_step}:\n    compute: docker\n    script:",
                         str(path))
    path.write_text(text)
    return dest


def copy_boto3_stack(dest: pathlib.Path) -> pathlib.Path:
    """The pure-Python boto3 stack of this venv, to mount into step containers (python3-only image)."""
    import boto3

    site = pathlib.Path(boto3.__file__).resolve().parents[1]
    for name in BOTO3_STACK:
        shutil.copytree(site / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(site / "six.py", dest / "six.py")
    return dest


def create_database() -> str:
    import psycopg2

    name = f"mlpipe_it_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(f"{PG_DSN}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return name


def drop_database(name: str) -> None:
    import psycopg2

    if not name.startswith("mlpipe_it_"):
        raise ValueError(f"refusing to drop {name!r}: not a database of this script")
    conn = psycopg2.connect(f"{PG_DSN}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def pick_redis_db() -> int:
    """A Redis database number (1..15) that holds no key; 0 is left to whoever uses the default."""
    import redis

    numbers = list(range(1, 16))
    random.shuffle(numbers)
    for number in numbers:
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
        try:
            if client.dbsize() == 0:
                return number
        finally:
            client.close()
    raise RuntimeError(f"no empty Redis database on {REDIS_HOST}:{REDIS_PORT}")


def flush_redis_db(number: int) -> None:
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=number)
    try:
        client.flushdb()
    finally:
        client.close()


def start_moto(log: pathlib.Path, timeout: float = 30) -> tuple[subprocess.Popen, str]:
    port = free_port()
    binary = BIN / "moto_server"
    proc = subprocess.Popen([str(binary if binary.exists() else "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log}")
        try:
            httpx.get(f"{url}/moto-api/", timeout=1)
            return proc, url
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                _stop_group(proc.pid, proc)
                raise RuntimeError(f"moto_server did not answer on {url}") from None
            time.sleep(0.1)


def create_bucket(endpoint: str, name: str) -> None:
    import boto3

    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                 region_name=S3_REGION).create_bucket(Bucket=name)


def s3_options(endpoint: str) -> dict[str, str]:
    return {"endpoint_url": endpoint, "aws_access_key_id": S3_KEY, "aws_secret_access_key": S3_SECRET,
            "region_name": S3_REGION}


def _stop_group(pid: int, proc: subprocess.Popen | None = None, timeout: float = 20) -> None:
    """SIGTERM the process group ``pid``, SIGKILL it after ``timeout``; reap ``proc`` if it is our child."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        if proc is not None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=1)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                break
        else:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # leftovers of the group (task supervisors, step processes)
    if proc is not None:
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)


# ------------------------------------------------------------------------------------------ the shape
class Shape:
    """A running distributed shape. ``url``, ``username``, ``password``, ``env`` (the common environment),
    ``workers`` ({name: {"hostname", "scratch", "queue", "log", "pid"}}), ``workspace_uri``,
    ``s3_options``, ``dags``, ``home``, ``database``, ``redis_db``, ``timings`` (start-up seconds)."""

    def __init__(self, home: pathlib.Path, state: dict[str, Any]):
        self.home = home
        self.state = state
        self.procs: dict[str, subprocess.Popen] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return self.state[name]
        except KeyError:
            raise AttributeError(name) from None

    def client(self):
        from airflow_mlpipe.client import AirflowClient

        return AirflowClient(self.url, username=self.username, password=self.password)

    def workspace(self):
        from airflow_mlpipe.workspace.core import Workspace

        return Workspace.from_uri(self.workspace_uri, **self.s3_options)

    def log(self, name: str) -> str:
        return (self.home / "logs" / f"{name}.log").read_text(errors="replace")

    def _save(self) -> None:
        (self.home / "shape.json").write_text(json.dumps(self.state, indent=2, default=str))

    def stop(self) -> None:
        """Stop every process (workers first), drop the database, flush the Redis DB, stop our moto."""
        stop_state(self.state, self.procs)
        (self.home / "shape.json").unlink(missing_ok=True)


def stop_state(state: dict[str, Any], procs: dict[str, subprocess.Popen] | None = None) -> None:
    procs = procs or {}
    order = [*(f"worker-{n}" for n in range(1, len(WORKERS) + 1)), "scheduler", "triggerer", "dag-processor",
             "api-server", "moto"]
    pids = state.get("pids", {})
    for name in order + [n for n in pids if n not in order]:
        if name in pids:
            t0 = time.monotonic()
            _stop_group(pids[name], procs.get(name))
            state.setdefault("stop_seconds", {})[name] = round(time.monotonic() - t0, 1)
    if state.get("database"):
        with contextlib.suppress(Exception):
            drop_database(state["database"])
    if state.get("redis_db"):
        with contextlib.suppress(Exception):
            flush_redis_db(state["redis_db"])


def _common_env(home: pathlib.Path, dags: pathlib.Path, port: int, database: str, redis_db: int,
                workspace_uri: str, endpoint: str, password_file: pathlib.Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    env = dict(os.environ)
    for name in list(env):
        if name.startswith("AIRFLOW__") or name.startswith("AIRFLOW_CONN_") or name.startswith("MLPIPE_"):
            del env[name]  # nothing of the caller's Airflow (e.g. the test session's) leaks in
    db_url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}"
    env.update({
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
        # the driver is explicit: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not installed here
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",  # as scripts/standalone.py: a busy machine
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # no fixed ports: another Airflow (a standalone) may run on this machine
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW_CONN_MLPIPE_DEFAULT": json.dumps({
            "conn_type": "mlpipe", "login": S3_KEY, "password": S3_SECRET,
            "extra": {"workspace": workspace_uri, "endpoint_url": endpoint, "region_name": S3_REGION},
        }),
        "DOCKER_HOST": os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST,
    })
    return env


def start(home: pathlib.Path, port: int | None = None, s3_endpoint: str | None = None,
          alternate_workers: bool = False, seed_rows: int = 12000, timeout: float = 300) -> Shape:
    """Start the whole shape under ``home`` and return it once the API answers, the scheduler, triggerer and
    dag processor report healthy and both workers are ready. Stops what it started if anything fails."""
    home = pathlib.Path(home)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    state: dict[str, Any] = {"home": str(home), "pids": {}, "shape_id": uuid.uuid4().hex[:12]}
    shape = Shape(home, state)
    try:
        state["database"] = create_database()
        state["redis_db"] = pick_redis_db()
        shape._save()
        if s3_endpoint is None:
            moto, s3_endpoint = start_moto(home / "logs" / "moto.log")
            shape.procs["moto"] = moto
            state["pids"]["moto"] = moto.pid
        bucket = f"mlpipe-it-{uuid.uuid4().hex[:10]}"
        create_bucket(s3_endpoint, bucket)
        state["workspace_uri"] = f"s3://{bucket}/ws"
        state["s3_options"] = s3_options(s3_endpoint)
        deps = copy_boto3_stack(home / "step-deps")
        dags = prepare_dags(home / "dags", deps)
        state["dags"] = str(dags)

        port = port or free_port()
        password = secrets.token_urlsafe(12)
        password_file = home / "passwords.json"
        password_file.write_text(json.dumps({"admin": password}))
        password_file.chmod(0o600)
        env = _common_env(home, dags, port, state["database"], state["redis_db"], state["workspace_uri"],
                          s3_endpoint, password_file)
        state.update(url=f"http://localhost:{port}", port=port, username="admin", password=password, env=env)
        config_dir = home / "airflow" / "config"  # on sys.path of every Airflow process
        config_dir.mkdir(parents=True, exist_ok=True)
        (config_dir / "mlpipe_shape.py").write_text(IDENTITY_MODULE)
        if alternate_workers:
            (config_dir / "airflow_local_settings.py").write_text(LOCAL_SETTINGS)
        shape._save()
        timings["prepare"] = time.monotonic() - t0

        with open(home / "logs" / "db-migrate.log", "ab") as log:
            subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, check=True, stdout=log,
                           stderr=subprocess.STDOUT, timeout=600)
        timings["db_migrate"] = time.monotonic() - t0 - timings["prepare"]

        def launch(name: str, argv: list[str], extra: dict[str, str] | None = None) -> None:
            proc = subprocess.Popen(
                [str(BIN / "airflow"), *argv], env={**env, **(extra or {})},
                stdout=open(home / "logs" / f"{name}.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                start_new_session=True, cwd=home,
            )
            shape.procs[name] = proc
            state["pids"][name] = proc.pid
            shape._save()

        launch("api-server", ["api-server", "--port", str(port), "--workers", "1"])
        launch("scheduler", ["scheduler"])
        launch("dag-processor", ["dag-processor"])
        launch("triggerer", ["triggerer"])
        workers: dict[str, dict[str, Any]] = {}
        for name in WORKERS:
            wdir = home / name
            queue = f"mlpipe-{name}"
            extra = {
                "MLPIPE_WORKER_NAME": f"mlpipe-{name}",
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlpipe_shape.hostname",
                "MLPIPE_SCRATCH_DIR": str(wdir / "scratch"),
                "MLPIPE_VENV_DIR": str(wdir / "venvs"),
                "MLPIPE_CACHE_DIR": str(wdir / "cache"),
                "MLPIPE_RUNTIME_DIR": str(wdir / "runtime"),
                "TMPDIR": str(wdir / "tmp"),
            }
            (wdir / "tmp").mkdir(parents=True, exist_ok=True)
            launch(name, ["celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "2",
                          "--queues", f"default,{queue}", "--skip-serve-logs", "--pid", str(wdir / "worker.pid")],
                   extra)
            workers[name] = {"hostname": extra["MLPIPE_WORKER_NAME"], "scratch": extra["MLPIPE_SCRATCH_DIR"],
                             "queue": queue, "log": str(home / "logs" / f"{name}.log"), "dir": str(wdir)}
        state["workers"] = workers
        shape._save()

        seeded = _seed(state["workspace_uri"], state["s3_options"], seed_rows)
        state["seeded"] = seeded
        timings["seed"] = time.monotonic() - t0 - timings["prepare"] - timings["db_migrate"]
        _wait_ready(shape, timeout, t0)
        timings["ready"] = time.monotonic() - t0
        state["timings"] = timings
        shape._save()
        return shape
    except BaseException:
        shape.stop()
        raise


def _seed(uri: str, options: dict[str, str], rows: int) -> dict:
    sys.path.insert(0, str(REPO / "scripts"))
    import seed_income

    return seed_income.seed(uri, us_rows=rows, non_us_rows=max(rows // 4, 100), score_rows=max(rows // 4, 100),
                            **options)


def _wait_ready(shape: Shape, timeout: float, t0: float) -> None:
    deadline = t0 + timeout
    pending_workers = set(WORKERS)
    while True:
        for name, proc in shape.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {shape.home / 'logs' / (name + '.log')}")
        for name in list(pending_workers):
            if f"{name}@" in shape.log(name) and " ready." in shape.log(name):
                pending_workers.discard(name)
        healthy = False
        try:
            health = httpx.get(f"{shape.url}/api/v2/monitor/health", timeout=2).json()
            healthy = all((health.get(part) or {}).get("status") == "healthy"
                          for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))
        except (httpx.HTTPError, ValueError):
            pass
        if healthy and not pending_workers:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the distributed shape was not ready after {timeout:.0f}s (workers not ready: "
                               f"{sorted(pending_workers)}); logs in {shape.home / 'logs'}")
        time.sleep(1)


def stop(home: pathlib.Path) -> bool:
    """Stop the shape started under ``home`` by another process (reads ``home/shape.json``)."""
    state_file = pathlib.Path(home) / "shape.json"
    if not state_file.exists():
        return False
    state = json.loads(state_file.read_text())
    controller = state.get("controller_pid")
    if controller and controller != os.getpid():
        # `distributed.py start` is still running: it stops its own children on SIGTERM
        with contextlib.suppress(ProcessLookupError):
            os.kill(controller, signal.SIGTERM)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and state_file.exists():
                os.kill(controller, 0)
                time.sleep(0.5)
    if state_file.exists():
        stop_state(state)
        state_file.unlink(missing_ok=True)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="start the shape and keep it running until Ctrl-C")
    p_start.add_argument("--home", type=pathlib.Path, default=None)
    p_start.add_argument("--port", type=int, default=None)
    p_start.add_argument("--alternate-workers", action="store_true")
    p_stop = sub.add_parser("stop", help="stop the shape started under --home")
    p_stop.add_argument("--home", type=pathlib.Path, required=True)
    args = parser.parse_args()
    if args.command == "stop":
        print("stopped" if stop(args.home) else f"nothing running under {args.home}")
        return 0
    import tempfile

    home = args.home or pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-distributed-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `stop` (or kill) -> the finally below
    shape = start(home, port=args.port, alternate_workers=args.alternate_workers)
    shape.state["controller_pid"] = os.getpid()
    shape._save()
    print(f"Airflow (CeleryExecutor, 2 workers) at {shape.url}  user admin  password {shape.password}")
    print(f"workspace {shape.workspace_uri} ({shape.s3_options['endpoint_url']}); database {shape.database}; "
          f"redis db {shape.redis_db}; home {home}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        shape.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
