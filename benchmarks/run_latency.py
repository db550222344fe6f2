"""Run latency of the retraining pipeline (income_retrain_v2, 5 steps) in the two deployment shapes of
DESIGN.md section 6, same pipeline, same params (defaults), same generated data (--rows US rows):

- standalone: ``airflow standalone`` (scripts/standalone.py): SQLite, LocalExecutor, a local-directory
  workspace, every step on ``local`` compute;
- celery: the distributed shape (scripts/distributed.py): PostgreSQL, Redis + CeleryExecutor with two
  workers, an S3 workspace (moto on loopback), ``evaluate`` on ``docker`` compute (podman).

Each shape is started alone (the other is stopped first) and its DAG runs only when triggered (the copy has
no cron). Per shape, every run triggered through the REST API and timed from the server's own timestamps:

- (a) trigger -> first step: first task instance's start_date - the run's queued_at (median of all runs);
- (b) cold: queued_at -> end_date of the first run (nothing in the workspace: steps run, step venvs are
  built), and of a run with ``regenerate_outputs=true`` (steps run again, venvs warm);
- (c) fully reused: the same run again, every step reused from the cache (median of --reuse-repeat runs).

    python benchmarks/run_latency.py [--rows 12000] [--reuse-repeat 3]

Last line: ``RESULT run_latency ratio=R goal<=2.0`` where R = fully-reused run time under Celery / under
standalone (medians): the orchestration overhead the distributed shape adds to a run that does no work.
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import shutil
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

DAG_ID = "income_retrain_v2"
STEPS = ("prep", "train", "evaluate", "register", "promote")
GOAL = 2.0


def _ts(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def measure(client, conf: dict, expect_reused: bool) -> dict:
    run = client.trigger(DAG_ID, conf)
    run = client.wait(DAG_ID, run["dag_run_id"], timeout=1800, interval=0.5)
    tis = client.task_instances(DAG_ID, run["dag_run_id"])
    if run["state"] != "success":
        raise RuntimeError(f"run {run['dag_run_id']} {run['state']}: {[(t['task_id'], t['state']) for t in tis]}")
    reused = {task: (client.xcom(DAG_ID, run["dag_run_id"], task) or {}).get("reused") for task in STEPS}
    if expect_reused and reused != dict.fromkeys(STEPS, True):
        raise RuntimeError(f"run {run['dag_run_id']} was expected fully reused: {reused}")
    if not expect_reused and any(reused[s] for s in ("prep", "train", "evaluate")):
        raise RuntimeError(f"run {run['dag_run_id']} was expected to run its steps: {reused}")
    queued = _ts(run["queued_at"])
    first = min(_ts(t["start_date"]) for t in tis if t.get("start_date"))
    hosts = {t["task_id"]: t.get("hostname") for t in tis}
    return {"first_step": (first - queued).total_seconds(), "run": (_ts(run["end_date"]) - queued).total_seconds(),
            "hosts": " ".join(f"{task}@{hosts.get(task)}" for task in STEPS)}


def bench(client, reuse_repeat: int) -> dict:
    import standalone

    standalone.wait_for_dag(client, DAG_ID, timeout=300)
    client.set_paused(DAG_ID, False)
    cold = measure(client, {}, expect_reused=False)
    print(f"    cold (first run): {cold['run']:.1f}s  [{cold['hosts']}]", flush=True)
    regen = measure(client, {"regenerate_outputs": True}, expect_reused=False)
    print(f"    cold (regenerate_outputs, venvs warm): {regen['run']:.1f}s  [{regen['hosts']}]", flush=True)
    reused = []
    for _ in range(reuse_repeat):
        reused.append(measure(client, {}, expect_reused=True))
        print(f"    fully reused: {reused[-1]['run']:.1f}s  [{reused[-1]['hosts']}]", flush=True)
    firsts = [cold["first_step"], regen["first_step"], *(r["first_step"] for r in reused)]
    return {"first_step": statistics.median(firsts), "first_steps": firsts, "cold": cold["run"],
            "regen": regen["run"], "reused": statistics.median(r["run"] for r in reused),
            "reused_all": [r["run"] for r in reused]}


def run_standalone(root: pathlib.Path, rows: int, reuse_repeat: int) -> dict:
    import seed_income
    import standalone

    from airflow_mlpipe.client import AirflowClient

    home = root / "standalone"
    dags = home / "dags"
    shutil.copytree(REPO / "dags_examples", dags, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    yaml_path = dags / "pipelines" / "income_retrain.yaml"
    yaml_path.write_text(yaml_path.read_text().replace('  cron: "@weekly"\n', ""))
    workspace = home / "workspace"
    workspace.mkdir(parents=True)
    seed_income.seed(workspace.as_uri(), us_rows=rows, non_us_rows=max(rows // 4, 100),
                     score_rows=max(rows // 4, 100))
    t0 = time.monotonic()
    server = standalone.start(home, dags, workspace=workspace.as_uri(), timeout=300)
    print(f"  standalone up in {time.monotonic() - t0:.1f}s ({server['url']})", flush=True)
    try:
        with AirflowClient(server["url"], username=server["username"], password=server["password"]) as client:
            return bench(client, reuse_repeat)
    finally:
        standalone.stop(home)


def run_celery(root: pathlib.Path, rows: int, reuse_repeat: int) -> dict:
    import distributed

    t0 = time.monotonic()
    shape = distributed.start(root / "celery", seed_rows=rows)
    print(f"  celery shape up in {time.monotonic() - t0:.1f}s ({shape.url})", flush=True)
    try:
        with shape.client() as client:
            return bench(client, reuse_repeat)
    finally:
        shape.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12000, help="US rows of the training dataset")
    parser.add_argument("--reuse-repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-latency-") as tmp:
        root = pathlib.Path(tmp)
        print("standalone (SQLite, LocalExecutor, local workspace, local compute):", flush=True)
        results["standalone"] = run_standalone(root, args.rows, args.reuse_repeat)
        print("celery (PostgreSQL, Redis + 2 Celery workers, S3 workspace on moto, evaluate on docker):", flush=True)
        results["celery"] = run_celery(root, args.rows, args.reuse_repeat)
    header = (f"{'shape':<11}{'trigger->1st step':>18}{'cold (first)':>14}{'cold (regen)':>14}"
              f"{'fully reused':>14}   reused runs")
    print(header)
    for name, r in results.items():
        print(f"{name:<11}{r['first_step']:>17.1f}s{r['cold']:>13.1f}s{r['regen']:>13.1f}s{r['reused']:>13.1f}s   "
              f"{', '.join(f'{t:.1f}' for t in r['reused_all'])}")
    ratio = results["celery"]["reused"] / results["standalone"]["reused"]
    print(f"RESULT run_latency ratio={ratio:.3f} goal<={GOAL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
