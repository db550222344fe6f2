"""A fully reused pipeline vs a no-op DAG of the same shape, under the same Airflow.

Run from the repository root: ``python benchmarks/cache_hit.py`` (about five minutes).

Three DAGs of 6 tasks in a chain share one DAGs folder:

- ``bench_reused``: 6 steps built from YAML by the factory, local compute, local workspace; run once to
  warm (all steps run, the step venv is built), then every timed run reuses all six steps;
- ``bench_noop``: 6 ``PythonOperator`` tasks whose callable returns None (the ratio's denominator);
- ``bench_xcom``: 6 ``PythonOperator`` tasks that pull their upstream's XCom and return a small dict, as a
  step does (for information: what Airflow's own XCom round trips cost).

Part 1, the RESULT: a real running Airflow, ``airflow standalone`` (api-server, scheduler, dag processor,
triggerer, LocalExecutor, SQLite) as ``make demo`` starts it, with the scheduler's idle sleep cut to
0.1 s so that scheduling latency does not hide what a task costs. Each DAG is triggered through the REST
API, N times, interleaved; a run's time is its duration as Airflow records it (start_date -> end_date),
and every task's own duration is read too. Each task runs in its own process here, which parses the DAG
file and imports what the operator needs: the costs a user pays.

Part 2, for diagnosis: the same DAGs under ``dag.test()`` in this process (one metadata DB, N runs each,
interleaved), plus ``bench_floor``: 6 ``PythonOperator`` tasks with the pipeline's two params that return
a dict the size of a step's summary. In ``dag.test()`` a no-op task costs ~60 ms and one XCom push through
the in-process execution API ~8-15 ms, so no task that pushes its result can come near a no-op there; the
floor shows that bound. Then where a reused step's ``execute`` spends its time, measured directly.

The last line is ``RESULT cache_hit ratio=R goal<=1.2``: R = median run duration of the fully reused
pipeline / median run duration of the no-op DAG, under the running Airflow (part 1).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT = pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-bench-cache-"))
DAGS, WS = ROOT / "dags", ROOT / "ws"
os.environ["AIRFLOW_HOME"] = str(ROOT / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(DAGS)
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
os.environ["AIRFLOW_CONN_MLPIPE_DEFAULT"] = json.dumps({"conn_type": "mlpipe", "extra": {"workspace": WS.as_uri()}})
os.environ.setdefault("MLPIPE_VENV_DIR", str(ROOT / "venvs"))
os.environ.setdefault("MLPIPE_CACHE_DIR", str(ROOT / "cache"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

STEPS = 6
GOAL = 1.2

PIPELINE = """pipeline: bench_reused
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 0}
compute:
  local: {type: local}
environments:
  plain: {python: python3}
params:
  size: {type: integer, default: 10}
steps:
"""
STEP = """  s{i}:
    script: step.py
    source_directory: ../src
    arguments: [--size, "${{params.size}}", {input_arg}--out, "${{outputs.out}}"]
{inputs}    outputs: {{out: {{}}}}
"""
SCRIPT = """import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int)
parser.add_argument("--src", type=pathlib.Path)
parser.add_argument("--out", type=pathlib.Path)
args = parser.parse_args()
prev = (args.src / "v.txt").read_text() if args.src else ""
(args.out / "v.txt").write_text(prev + "x" * args.size)
"""
NOOP = """import datetime
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Param, chain

START = datetime.datetime(2026, 1, 1)


def noop():
    return None


def relay(ti, upstream):
    previous = ti.xcom_pull(task_ids=upstream) if upstream else None
    return {"outputs": {"out": {"digest": "0" * 64}}, "previous": bool(previous)}


def summary(step):
    # the size and shape of a step's XCom summary
    return {"step": step, "reused": True, "cache_key": "0" * 64, "reused_from": {"run_id": "r", "step": step},
            "outputs": {"out": {"key": f"outputs/p/r/{step}/out", "uri": "file:///ws/x", "digest": "0" * 64}},
            "metrics": {}, "registered": {}}


with DAG("bench_noop", schedule=None, start_date=START, catchup=False) as dag:
    chain(*[PythonOperator(task_id=f"t{i}", python_callable=noop) for i in range(1, 7)])

with DAG("bench_xcom", schedule=None, start_date=START, catchup=False) as xcom_dag:
    chain(*[PythonOperator(task_id=f"t{i}", python_callable=relay,
                           op_kwargs={"upstream": f"t{i - 1}" if i > 1 else None}) for i in range(1, 7)])

with DAG("bench_floor", schedule=None, start_date=START, catchup=False,
         params={"size": Param(10, type="integer"),
                 "regenerate_outputs": Param(False, type="boolean", description="Recompute every step.")}) as floor:
    chain(*[PythonOperator(task_id=f"t{i}", python_callable=summary, op_kwargs={"step": f"t{i}"})
            for i in range(1, 7)])
"""

LABELS = {
    "reused": "mlpipe pipeline, all 6 reused",
    "noop": "6 no-op PythonOperators",
    "xcom": "6 PythonOperators, XCom pull+push",
    "floor": "6 PythonOperators + params + push",
}
DAG_IDS = {"reused": "bench_reused", "noop": "bench_noop", "xcom": "bench_xcom", "floor": "bench_floor"}


def write_folder() -> None:
    (DAGS / "pipelines").mkdir(parents=True)
    (DAGS / "src").mkdir()
    (DAGS / "src" / "step.py").write_text(SCRIPT)
    steps = []
    for i in range(1, STEPS + 1):
        if i == 1:
            steps.append(STEP.format(i=i, input_arg="", inputs=""))
        else:
            steps.append(STEP.format(i=i, input_arg='--src, "${inputs.src}", ',
                                     inputs=f'    inputs: {{src: "${{steps.s{i - 1}.outputs.out}}"}}\n'))
    (DAGS / "pipelines" / "bench_reused.yaml").write_text(PIPELINE + "".join(steps))
    (DAGS / "bench_reused.py").write_text(
        'from airflow_mlpipe.factory import load_dag\n\ndag = load_dag(__file__, "pipelines/bench_reused.yaml")\n')
    (DAGS / "bench_noop.py").write_text(NOOP)
    (DAGS / ".airflowignore").write_text("src/\npipelines/\n")


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def table(title: str, walls: dict[str, list[float]], tasks: dict[str, list[float]]) -> None:
    print(f"\n{title}")
    print(f"{'DAG':<36}{'median run s':>14}{'p90 run s':>12}{'mean task s':>13}")
    for name in walls:
        print(f"{LABELS[name]:<36}{statistics.median(walls[name]):>14.3f}{p90(walls[name]):>12.3f}"
              f"{statistics.mean(tasks[name]):>13.4f}")
    extra = statistics.mean(tasks["reused"]) - statistics.mean(tasks["noop"])
    print(f"extra per reused step (task duration): {extra * 1000:+.1f} ms")


# ---------------------------------------------------------------- part 1: a running Airflow
def _ts(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def airflow_run(client, name: str) -> tuple[float, list[float], dict]:
    dag_id = DAG_IDS[name]
    run = client.trigger(dag_id, {})
    run = client.wait(dag_id, run["dag_run_id"], timeout=600, interval=0.2)
    tis = client.task_instances(dag_id, run["dag_run_id"])
    if run["state"] != "success":
        raise SystemExit(f"{dag_id} run {run['dag_run_id']} {run['state']}: "
                         f"{[(t['task_id'], t['state']) for t in tis]}")
    xcoms = {}
    if name == "reused":
        xcoms = {t["task_id"]: client.xcom(dag_id, run["dag_run_id"], t["task_id"]) or {} for t in tis}
    wall = (_ts(run["end_date"]) - _ts(run["start_date"])).total_seconds()
    return wall, [float(t["duration"] or 0.0) for t in tis], xcoms


def part1_airflow(runs: int) -> tuple[dict, dict]:
    import standalone

    from airflow_mlpipe.client import AirflowClient

    home = ROOT / "standalone"
    started = time.monotonic()
    server = standalone.start(home, DAGS, workspace=(ROOT / "ws-airflow").as_uri(), timeout=300,
                              extra_env={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1",
                                         "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    print(f"airflow standalone up in {time.monotonic() - started:.0f}s ({server['url']})", flush=True)
    names = ("reused", "noop", "xcom")
    walls: dict[str, list[float]] = {name: [] for name in names}
    tasks: dict[str, list[float]] = {name: [] for name in names}
    try:
        with AirflowClient(server["url"], username=server["username"], password=server["password"]) as client:
            for name in names:
                standalone.wait_for_dag(client, DAG_IDS[name], timeout=300)
                client.set_paused(DAG_IDS[name], False)
            _, _, first = airflow_run(client, "reused")  # warm: all six steps run, the venv is built
            if any(x.get("reused") is not False for x in first.values()):
                raise SystemExit(f"the warm-up run was expected to run every step: {first}")
            airflow_run(client, "noop")
            airflow_run(client, "xcom")
            for i in range(runs):
                for name in names:
                    wall, durations, xcoms = airflow_run(client, name)
                    if name == "reused" and not all(x.get("reused") for x in xcoms.values()):
                        raise SystemExit(f"a timed pipeline run did not reuse every step: {xcoms}")
                    walls[name].append(wall)
                    tasks[name].extend(durations)
                print(f"  round {i + 1}/{runs}: " + ", ".join(f"{n} {walls[n][-1]:.2f}s" for n in names), flush=True)
    finally:
        standalone.stop(home)
    return walls, tasks


# ---------------------------------------------------------------- part 2: dag.test() in this process
def dag_test_run(dag) -> tuple[float, list[float], dict]:
    start = time.perf_counter()
    dag_run = dag.test()
    wall = time.perf_counter() - start
    if str(dag_run.state) != "success":
        raise SystemExit(f"{dag.dag_id} run failed: {dag_run.state}")
    tis = dag_run.get_task_instances()
    durations = [ti.duration or 0.0 for ti in tis]
    xcoms = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in tis}
    return wall, durations, xcoms


def part2_dag_test(runs: int):
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.dag_processing.dagbag import DagBag

    from airflow_mlpipe.factory import load_dag

    bag = DagBag(dag_folder=str(DAGS / "bench_noop.py"))
    dags = {"reused": load_dag(DAGS / "bench_reused.py", "pipelines/bench_reused.yaml")}
    dags.update({name: bag.get_dag(DAG_IDS[name]) for name in ("noop", "xcom", "floor")})
    _, _, first = dag_test_run(dags["reused"])  # warm: all six steps run
    assert all(x["reused"] is False for x in first.values()), first
    for name in ("noop", "xcom", "floor"):
        dag_test_run(dags[name])
    walls: dict[str, list[float]] = {name: [] for name in dags}
    tasks: dict[str, list[float]] = {name: [] for name in dags}
    for _ in range(runs):
        for name, dag in dags.items():
            wall, durations, xcoms = dag_test_run(dag)
            if name == "reused" and not all(x["reused"] for x in xcoms.values()):
                raise SystemExit(f"a timed pipeline run did not reuse every step: {xcoms}")
            walls[name].append(wall)
            tasks[name].extend(durations)
    return dags["reused"], walls, tasks


def profile_reused_step(dag) -> list[tuple[str, float]]:
    """Median time of the parts of a reused step's execute, called directly (no Airflow around them)."""
    from airflow_mlpipe.operators import resolve
    from airflow_mlpipe.operators.steprun import StepRun
    from airflow_mlpipe.workspace.core import Workspace
    from airflow_mlpipe.workspace.snapshot import git_info, snapshot_source

    ws = Workspace.from_uri(WS.as_uri())
    op = dag.task_dict["s1"]
    params = {"size": 10, "regenerate_outputs": False}

    class TI:
        def xcom_pull(self, task_ids):  # s1 has no step inputs
            return None

    parts: dict[str, list[float]] = {}

    def clock(name, fn):
        start = time.perf_counter()
        value = fn()
        parts.setdefault(name, []).append(time.perf_counter() - start)
        return value

    for _ in range(20):
        clock("snapshot (hash + git status)", lambda: snapshot_source(ws.datastore, op.source_directory))
        clock("  of which git status", lambda: git_info(op.source_directory))
        clock("  snapshot without git", lambda: snapshot_source(ws.datastore, op.source_directory, git=False))
        run = StepRun.outside_airflow(op, ws, "bench", params, context={"ti": TI()})
        plan = clock("plan_step (snapshot, env hash, argv, key)", lambda run=run: resolve.plan_step(run, {"size": 10}))
        clock("cache lookup (entry + manifests)", lambda key=plan.key: ws.cache.lookup(key))
        clock("write run record", lambda: ws.runs.write_run(op.pipeline, "bench", {"params": params}))
        clock("write step record", lambda: ws.runs.write_step(op.pipeline, "bench", "s1", {"status": "x"}))
    return [(name, statistics.median(values)) for name, values in parts.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per DAG under the running Airflow")
    parser.add_argument("--dag-test-runs", type=int, default=7, help="timed runs per DAG under dag.test()")
    args = parser.parse_args()
    import airflow

    write_folder()
    print(f"6-task chains, Airflow {airflow.__version__}, work folder {ROOT}", flush=True)
    walls, tasks = part1_airflow(args.runs)
    table(f"part 1: running Airflow (standalone, LocalExecutor), {args.runs} runs each, interleaved",
          walls, tasks)

    pipeline, test_walls, test_tasks = part2_dag_test(args.dag_test_runs)
    table(f"part 2: dag.test() in one process, {args.dag_test_runs} runs each, interleaved", test_walls, test_tasks)
    noop = statistics.median(test_walls["noop"])
    print(f"dag.test ratios to the no-op DAG: reused pipeline {statistics.median(test_walls['reused']) / noop:.2f}, "
          f"floor (params + one XCom push per task, no work) {statistics.median(test_walls['floor']) / noop:.2f}")

    print("\nreused step s1, parts of execute (median of 20, called directly):")
    for name, seconds in profile_reused_step(pipeline):
        print(f"  {name:<44}{seconds * 1000:>8.2f} ms")
    ratio = statistics.median(walls["reused"]) / statistics.median(walls["noop"])
    print(f"\nRESULT cache_hit ratio={ratio:.2f} goal<={GOAL}")


if __name__ == "__main__":
    main()
