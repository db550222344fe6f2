"""A fully reused pipeline vs a no-op DAG of the same shape, under the same Airflow, in one process.

Run from the repository root: ``python benchmarks/cache_hit.py`` (about a minute).

- pipeline: 6 steps in a chain, built from YAML by the factory, local compute, local workspace; run once
  to warm (all steps run), then every timed run reuses all six steps;
- baseline: 6 ``PythonOperator`` no-op tasks in a chain (the ratio's denominator); for information, also
  6 ``PythonOperator`` tasks that pull their upstream's XCom and return a small dict, as a step does;
- both run with ``dag.test()`` from the same temporary DAGs folder and metadata DB, N repetitions each,
  interleaved; the wall time of whole runs (median, p90) and the mean task duration Airflow recorded;
- then where a reused step's ``execute`` spends its time, measured directly on the same workspace:
  resolving the step (snapshot hashing, git status, inputs), the cache lookup, run-record writes.

The last line is ``RESULT cache_hit ratio=R goal<=1.2``: R = median reused-pipeline run time / median
no-op run time.
"""

from __future__ import annotations

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

N = int(os.environ.get("MLPIPE_BENCH_N", "7"))
STEPS = 6

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
from airflow.sdk import DAG, chain

def noop():
    return None

def relay(ti, upstream):
    previous = ti.xcom_pull(task_ids=upstream) if upstream else None
    return {"outputs": {"out": {"digest": "0" * 64}}, "previous": bool(previous)}

with DAG("bench_noop", schedule=None, start_date=datetime.datetime(2026, 1, 1), catchup=False) as dag:
    chain(*[PythonOperator(task_id=f"t{i}", python_callable=noop) for i in range(1, 7)])

with DAG("bench_xcom", schedule=None, start_date=datetime.datetime(2026, 1, 1), catchup=False) as xcom_dag:
    chain(*[PythonOperator(task_id=f"t{i}", python_callable=relay,
                           op_kwargs={"upstream": f"t{i - 1}" if i > 1 else None}) for i in range(1, 7)])
"""


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


def timed_run(dag) -> tuple[float, list[float], dict]:
    start = time.perf_counter()
    dag_run = dag.test()
    wall = time.perf_counter() - start
    if str(dag_run.state) != "success":
        raise SystemExit(f"{dag.dag_id} run failed: {dag_run.state}")
    tis = dag_run.get_task_instances()
    durations = [ti.duration or 0.0 for ti in tis]
    xcoms = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in tis}
    return wall, durations, xcoms


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def profile_reused_step(dag) -> list[tuple[str, float]]:
    """Median time of the parts of a reused step's execute, called directly (no Airflow around them)."""
    from airflow_mlpipe.operators import resolve
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
        plan = clock("plan_step (snapshot, env hash, argv, key)", lambda: resolve.plan_step(
            op, ws, {"ti": TI()}, params, op.pipeline, "bench", {"size": 10}))
        clock("cache lookup (entry + manifests)", lambda key=plan.key: ws.cache.lookup(key))
        clock("write run record", lambda: ws.runs.write_run(op.pipeline, "bench", {"params": params}))
        clock("write step record", lambda: ws.runs.write_step(op.pipeline, "bench", "s1", {"status": "x"}))
    return [(name, statistics.median(values)) for name, values in parts.items()]


def main() -> None:
    write_folder()
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    from airflow.dag_processing.dagbag import DagBag

    from airflow_mlpipe.factory import load_dag

    pipeline = load_dag(DAGS / "bench_reused.py", "pipelines/bench_reused.yaml")
    bag = DagBag(dag_folder=str(DAGS / "bench_noop.py"))
    noop, relay = bag.get_dag("bench_noop"), bag.get_dag("bench_xcom")
    _, _, first = timed_run(pipeline)  # warm: all six steps run
    assert all(x["reused"] is False for x in first.values()), first
    timed_run(noop)
    timed_run(relay)

    walls: dict[str, list[float]] = {"reused": [], "noop": [], "xcom": []}
    tasks: dict[str, list[float]] = {"reused": [], "noop": [], "xcom": []}
    for _ in range(N):
        for name, dag in (("reused", pipeline), ("noop", noop), ("xcom", relay)):
            wall, durations, xcoms = timed_run(dag)
            if name == "reused" and not all(x["reused"] for x in xcoms.values()):
                raise SystemExit(f"a timed pipeline run did not reuse every step: {xcoms}")
            walls[name].append(wall)
            tasks[name].extend(durations)

    print(f"\n6-task chain under dag.test(), {N} runs each, interleaved (Airflow {__import__('airflow').__version__})")
    print(f"{'DAG':<34}{'median run s':>14}{'p90 run s':>12}{'mean task s':>13}")
    labels = {"reused": "mlpipe pipeline, all 6 reused", "noop": "6 no-op PythonOperators",
              "xcom": "6 PythonOperators, XCom pull+push"}
    for name in ("reused", "noop", "xcom"):
        print(f"{labels[name]:<34}{statistics.median(walls[name]):>14.3f}{p90(walls[name]):>12.3f}"
              f"{statistics.mean(tasks[name]):>13.4f}")
    extra = statistics.mean(tasks["reused"]) - statistics.mean(tasks["noop"])
    print(f"extra per reused step (task duration): {extra * 1000:.1f} ms")

    print("\nreused step s1, parts of execute (median of 20, called directly):")
    for name, seconds in profile_reused_step(pipeline):
        print(f"  {name:<44}{seconds * 1000:>8.2f} ms")
    ratio = statistics.median(walls["reused"]) / statistics.median(walls["noop"])
    print(f"\nRESULT cache_hit ratio={ratio:.2f} goal<=1.2")


if __name__ == "__main__":
    main()
