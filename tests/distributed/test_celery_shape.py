"""The distributed shape (DESIGN.md section 6) for real, with local processes: PostgreSQL metadata DB, Redis +
CeleryExecutor with two separate ``airflow celery worker`` processes (own scratch/venv/cache/tmp dirs and own
task-instance hostname each), api-server, scheduler, dag-processor, triggerer, an S3 workspace on moto, and
the retraining pipeline with its ``evaluate`` step on ``docker`` compute (podman). Started once for the
module by scripts/distributed.py with ``alternate_workers=True``: a dag_policy puts consecutive steps on
different workers' queues, so every producer -> consumer hand-over crosses workers by design, not by luck.

One cold run and one identical run (fully reused), both triggered through the REST API. Timings are printed
(``-s``) and written to ``<home>/timings.json``.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import distributed  # noqa: E402
import standalone  # noqa: E402

from airflow_mlpipe.workspace.manifest import read_manifest  # noqa: E402
from tests.conftest import scaled  # noqa: E402

pytestmark = pytest.mark.integration

DAG_ID = "income_retrain_v2"
STEPS = ("prep", "train", "evaluate", "register", "promote")
SCRIPT_STEPS = ("prep", "train", "evaluate")


def _ts(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _require_services() -> None:
    if os.environ.get("MLPIPE_SKIP_DOCKER") == "1":
        pytest.skip("MLPIPE_SKIP_DOCKER=1 (the shape runs a docker step)")
    import docker
    import psycopg2
    import redis

    problems = []
    try:
        psycopg2.connect(f"{distributed.PG_DSN}/postgres", connect_timeout=5).close()
    except Exception as exc:
        problems.append(f"PostgreSQL on 127.0.0.1:5432: {exc}")
    try:
        redis.Redis(host=distributed.REDIS_HOST, port=distributed.REDIS_PORT, socket_timeout=5).ping()
    except Exception as exc:
        problems.append(f"Redis on 127.0.0.1:6379: {exc}")
    url = os.environ.get("DOCKER_HOST") or distributed.DEFAULT_DOCKER_HOST
    try:
        docker.DockerClient(base_url=url, timeout=10).ping()
    except Exception as exc:
        problems.append(f"Docker Engine API at {url}: {exc}")
    if problems:
        pytest.fail("the distributed shape needs: " + "; ".join(problems) + " (run `sudo scripts/setup_system.sh`)")


@pytest.fixture(scope="module")
def shape(tmp_path_factory, moto_server):
    _require_services()
    home = tmp_path_factory.mktemp("distributed")
    started = time.monotonic()
    shape = distributed.start(home, s3_endpoint=moto_server, alternate_workers=True)
    shape.state["timings"]["start_total"] = time.monotonic() - started
    try:
        yield shape
    finally:
        shape.stop()
        print(f"\n[distributed] stop took {shape.state.get('stop_seconds')}")


def _scratch_entries(shape) -> dict[str, list[str]]:
    out = {}
    for name, worker in shape.workers.items():
        path = pathlib.Path(worker["scratch"])
        out[name] = sorted(p.name for p in path.iterdir()) if path.exists() else []
    return out


def _run(shape, client, conf: dict | None = None) -> dict:
    """Trigger through REST, wait, and collect what the assertions need. While the run goes, the workers'
    scratch dirs are sampled: what was seen there (per-attempt dirs) is reported."""
    seen: dict[str, set[str]] = {name: set() for name in shape.workers}

    def sample(_run: dict) -> None:
        for name, entries in _scratch_entries(shape).items():
            seen[name].update(entries)

    posted = time.time()
    run = client.trigger(DAG_ID, conf or {})
    run_id = run["dag_run_id"]
    run = client.wait(DAG_ID, run_id, timeout=scaled(900), interval=0.5, on_poll=sample)
    observed_end = time.time()
    tis = {ti["task_id"]: ti for ti in client.task_instances(DAG_ID, run_id)}
    xcoms = {task: client.xcom(DAG_ID, run_id, task) for task in STEPS}
    first_start = min(_ts(ti["start_date"]) for ti in tis.values() if ti.get("start_date"))
    queued = _ts(run["queued_at"])
    timings = {
        "trigger_to_first_step": (first_start - queued).total_seconds(),
        "post_to_first_step": first_start.timestamp() - posted,
        "run": (_ts(run["end_date"]) - queued).total_seconds(),
        "post_to_observed_end": observed_end - posted,
    }
    return {"run": run, "run_id": run_id, "tis": tis, "xcoms": xcoms, "timings": timings,
            "scratch_seen": {k: sorted(v) for k, v in seen.items()}, "scratch_after": _scratch_entries(shape)}


@pytest.fixture(scope="module")
def runs(shape):
    from airflow_mlpipe.client import AirflowClient

    with AirflowClient(shape.url, username=shape.username, password=shape.password) as client:
        standalone.wait_for_dag(client, DAG_ID, timeout=scaled(180))
        client.set_paused(DAG_ID, False)
        cold = _run(shape, client)
        reused = _run(shape, client)
        other_runs = [r["dag_run_id"] for r in client.dag_runs(DAG_ID)
                      if r["dag_run_id"] not in (cold["run_id"], reused["run_id"])]
    ws = shape.workspace()
    for result in (cold, reused):
        result["record"] = ws.runs.get_run(DAG_ID, result["run_id"])
    timings = {"start": shape.timings, "cold": cold["timings"], "reused": reused["timings"]}
    (shape.home / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"\n[distributed] timings (s): {json.dumps(timings, indent=1)}")
    print(f"[distributed] hostnames cold: { {t: ti['hostname'] for t, ti in cold['tis'].items()} }")
    print(f"[distributed] scratch entries seen during the cold run: {cold['scratch_seen']}")
    return {"cold": cold, "reused": reused, "ws": ws, "other_runs": other_runs}


def test_cold_run_succeeds_on_both_workers(shape, runs):
    cold = runs["cold"]
    assert cold["run"]["state"] == "success", {t: ti["state"] for t, ti in cold["tis"].items()}
    assert runs["other_runs"] == [], "only the triggered runs may exist (the copy has no cron schedule)"
    assert {t: ti["state"] for t, ti in cold["tis"].items()} == dict.fromkeys(STEPS, "success")
    assert all(cold["xcoms"][step]["reused"] is False for step in SCRIPT_STEPS), cold["xcoms"]
    hostnames = {ti["hostname"] for ti in cold["tis"].values()}
    assert hostnames == {w["hostname"] for w in shape.workers.values()}, hostnames
    # each task ran on the worker that consumes its queue (the dag_policy of alternate_workers)
    by_queue = {w["queue"]: w["hostname"] for w in shape.workers.values()}
    for task, ti in cold["tis"].items():
        assert by_queue[ti["queue"]] == ti["hostname"], (task, ti["queue"], ti["hostname"])


def test_no_step_reads_another_steps_files_from_a_worker_disk(shape, runs):
    cold = runs["cold"]
    ws = runs["ws"]
    host = {t: ti["hostname"] for t, ti in cold["tis"].items()}
    steps = cold["record"]["steps"]
    # every output lives in S3 and every input was read from there
    for step in SCRIPT_STEPS:
        for name, out in steps[step]["outputs"].items():
            assert out["uri"].startswith(f"{shape.workspace_uri}/"), (step, name, out["uri"])
            assert read_manifest(ws.datastore, out["key"])["digest"] == out["digest"], (step, name)
        for name, out in cold["xcoms"][step]["outputs"].items():
            assert out["uri"].startswith("s3://"), (step, name, out)
    # the producer -> consumer hand-overs crossed workers
    crossings = []
    for step in SCRIPT_STEPS:
        for inp in steps[step]["inputs"].values():
            producer = inp["source"].split(".")[0]
            if producer in host:
                assert inp["key"].startswith(f"outputs/{DAG_ID}/"), inp
                crossings.append((producer, step, host[producer] != host[step]))
    assert ("prep", "train", True) in crossings and ("train", "evaluate", True) in crossings, crossings
    # a local step works in a per-attempt scratch dir of its worker, removed after the attempt: both workers
    # used theirs (prep on one, train on the other) and nothing is left in either
    for name, worker in shape.workers.items():
        scratch = pathlib.Path(worker["scratch"])
        assert scratch.is_dir(), f"{name} never used its scratch dir {scratch}"
        assert cold["scratch_after"][name] == [] and runs["reused"]["scratch_after"][name] == [], (
            name, cold["scratch_after"], runs["reused"]["scratch_after"])


def test_docker_step_ran_in_a_container(shape, runs):
    cold = runs["cold"]
    record = cold["record"]["steps"]["evaluate"]
    assert record["compute"] == "docker"
    assert {s: cold["record"]["steps"][s]["compute"] for s in ("prep", "train")} == {"prep": "local", "train": "local"}
    result = runs["ws"].runs.read_result(DAG_ID, cold["run_id"], "evaluate", 1)
    local = runs["ws"].runs.read_result(DAG_ID, cold["run_id"], "train", 1)
    assert result["status"] == "succeeded"
    # the image's Debian python3, not the worker venv's interpreter
    assert local["python"] == platform.python_version() and result["python"] != local["python"], (result, local)
    assert record["metrics"]["auc"] > 0.6, record["metrics"]


def test_identical_run_reuses_every_step(runs):
    reused = runs["reused"]
    assert reused["run"]["state"] == "success"
    assert {t: (x or {}).get("reused") for t, x in reused["xcoms"].items()} == dict.fromkeys(STEPS, True)
    cold_digests = {s: {k: v["digest"] for k, v in runs["cold"]["xcoms"][s]["outputs"].items()} for s in SCRIPT_STEPS}
    assert {s: {k: v["digest"] for k, v in reused["xcoms"][s]["outputs"].items()} for s in SCRIPT_STEPS} == cold_digests
    for step in SCRIPT_STEPS:
        assert reused["xcoms"][step]["reused_from"]["run_id"] == runs["cold"]["run_id"]


def test_timings_are_recorded(shape, runs):
    timings = json.loads((shape.home / "timings.json").read_text())
    cold, reused = timings["cold"], timings["reused"]
    assert 0 < cold["trigger_to_first_step"] < cold["run"]
    assert 0 < reused["run"] < cold["run"], timings
