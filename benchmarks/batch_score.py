"""Batch scoring: 1,000,000 rows scored by the income_batch_score pipeline in 4 partitions vs 1 partition,
under a real `airflow standalone` (LocalExecutor runs the mapped partitions in parallel), same run.

    python benchmarks/batch_score.py [--rows 1000000] [--repeat 2]

Each run uses regenerate_outputs, so nothing is reused. Two figures per run: the scoring step itself (from
the first partition task's start to the merge task's end: what partitioning speeds up) and the whole DAG
run (which adds the row-count report step and scheduling gaps).
Last line: RESULT batch_score ratio=R goal>=1.6 (R = 1-partition / 4-partition scoring-step time).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
INCOME = REPO / "dags_examples" / "src" / "income"


def make_model(ws, tmp: pathlib.Path) -> None:
    """Train a small model with the example's own scripts (run by hand, offline) and make it production."""
    subprocess.run([sys.executable, str(INCOME / "make_data.py"), "--rows", "3000", "--out", str(tmp / "raw.csv")],
                   check=True, capture_output=True)
    for folder in ("prep", "model"):
        (tmp / folder).mkdir()
    env = {"PYTHONPATH": f"{INCOME}:{REPO}", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, str(INCOME / "prep.py"), "--raw", str(tmp / "raw.csv"), "--out", str(tmp / "prep")],
                   check=True, capture_output=True, env=env)
    subprocess.run([sys.executable, str(INCOME / "train.py"), "--data", str(tmp / "prep"), "--learning-rate", "0.5",
                    "--epochs", "20", "--model", str(tmp / "model")], check=True, capture_output=True, env=env)
    version = ws.models.register("income", tmp / "model", extra={"metrics": {}})
    ws.models.set_alias("income", "production", version.version)


def dags_folder(root: pathlib.Path) -> pathlib.Path:
    dags = root / "dags"
    (dags / "pipelines").mkdir(parents=True)
    shutil.copytree(INCOME, dags / "src" / "income")
    (dags / ".airflowignore").write_text("src/\npipelines/\n")
    text = (REPO / "dags_examples" / "pipelines" / "income_batch_score.yaml").read_text()
    for n in (1, 4):
        variant = text.replace("pipeline: income_batch_score", f"pipeline: bench_score_{n}").replace(
            "partitions: 4", f"partitions: {n}").replace("register_as: income_scores", f"register_as: bench_scores_{n}")
        (dags / "pipelines" / f"bench_score_{n}.yaml").write_text(variant)
        (dags / f"bench_score_{n}.py").write_text(
            f'from airflow_mlpipe.factory import load_dag\n\ndag = load_dag(__file__, "pipelines/bench_score_{n}.yaml")\n')
    return dags


def _ts(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def run_seconds(run: dict) -> float:
    return (_ts(run["end_date"]) - _ts(run["start_date"])).total_seconds()


def score_step_seconds(client, dag_id: str, run_id: str) -> float:
    tis = [ti for ti in client.task_instances(dag_id, run_id) if ti["task_id"].startswith("score.")]
    return (max(_ts(ti["end_date"]) for ti in tis) - min(_ts(ti["start_date"]) for ti in tis)).total_seconds()


def main() -> int:
    import standalone

    from airflow_mlpipe.client import AirflowClient
    from airflow_mlpipe.workspace.core import Workspace

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlpipe-bench-score-") as tmp:
        root = pathlib.Path(tmp)
        ws_path = root / "home" / "workspace"
        ws = Workspace.from_uri(ws_path.as_uri())
        make_model(ws, root)
        data = root / "rows.csv"
        t0 = time.monotonic()
        subprocess.run([sys.executable, str(INCOME / "make_data.py"), "--rows", str(args.rows), "--no-label",
                        "--out", str(data)], check=True, capture_output=True)
        ws.datastore.upload_file(data, "data/bench/rows.csv")
        small = root / "small.csv"
        subprocess.run([sys.executable, str(INCOME / "make_data.py"), "--rows", "1000", "--no-label", "--out",
                        str(small)], check=True, capture_output=True)
        ws.datastore.upload_file(small, "data/bench/small.csv")
        print(f"generated {args.rows} rows ({data.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - t0:.1f}s")
        server = standalone.start(root / "home", dags_folder(root))
        times: dict[int, list[float]] = {1: [], 4: []}
        whole: dict[int, list[float]] = {1: [], 4: []}
        try:
            with AirflowClient(server["url"], username=server["username"], password=server["password"]) as client:
                for n in times:
                    standalone.wait_for_dag(client, f"bench_score_{n}")
                    client.set_paused(f"bench_score_{n}", False)
                for n in times:  # warm-up: builds the step environment, snapshots the sources
                    run = client.trigger(f"bench_score_{n}", {"scoring_data": "data/bench/small.csv"})
                    client.wait(f"bench_score_{n}", run["dag_run_id"], timeout=600)
                for rep in range(args.repeat):
                    for n in ((1, 4) if rep % 2 == 0 else (4, 1)):
                        dag = f"bench_score_{n}"
                        run = client.trigger(dag, {"scoring_data": "data/bench/rows.csv", "regenerate_outputs": True})
                        run = client.wait(dag, run["dag_run_id"], timeout=1800)
                        if run["state"] != "success":
                            print(f"{dag} run {run['dag_run_id']} {run['state']}; see {server['log']}")
                            return 1
                        times[n].append(score_step_seconds(client, dag, run["dag_run_id"]))
                        whole[n].append(run_seconds(run))
                        print(f"  {n} partition(s): scoring step {times[n][-1]:.1f}s, whole run {whole[n][-1]:.1f}s")
        finally:
            standalone.stop(root / "home")
    one, four = statistics.median(times[1]), statistics.median(times[4])
    print(f"{'partitions':>10}{'scoring s':>11}{'rows/s':>10}{'whole run s':>13}   scoring runs")
    for n, value in ((1, one), (4, four)):
        print(f"{n:>10}{value:>11.1f}{args.rows / value:>10.0f}{statistics.median(whole[n]):>13.1f}   "
              f"{', '.join(f'{t:.1f}' for t in times[n])}")
    print(f"whole-run ratio (incl. the report step): {statistics.median(whole[1]) / statistics.median(whole[4]):.3f}")
    print(f"RESULT batch_score ratio={one / four:.3f} goal>=1.6")
    return 0


if __name__ == "__main__":
    sys.exit(main())
