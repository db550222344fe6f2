"""``make demo``: start Airflow standalone on dags_examples/, seed the income example's data into the
workspace (first time only), trigger the retraining pipeline through the REST API with a parameter
override, wait for it and print what the run produced (read from the run itself: task states and the
steps' XComs: ran or reused, metrics, model version and alias, outputs), then leave Airflow running
until ``make stop``. A second ``make demo`` reuses the Airflow already running in the same home (never a
second one: scripts/standalone.py decides under a lock) and shows every unchanged step as reused."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from rich.console import Console

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import standalone  # noqa: E402

from airflow_mlpipe.cli.trigger import print_summary  # noqa: E402
from airflow_mlpipe.client import AirflowClient  # noqa: E402

REPO = standalone.REPO
console = Console()


def start_airflow(home: pathlib.Path, port: int) -> dict:
    """The Airflow of ``home``: the running one, or a new one on ``port``; says what it waits for."""
    t0 = time.monotonic()
    printed = [0.0]
    with console.status(f"starting Airflow (home {home}) ...") as status:
        def on_wait(text: str) -> None:
            if not text.startswith("waiting"):
                console.print(text)
            elif console.is_terminal:
                status.update(text)
            elif time.monotonic() - printed[0] >= 15:  # a log, not a terminal: a line now and then
                console.print(text)
                printed[0] = time.monotonic()

        server = standalone.start(home, REPO / "dags_examples", port=port, timeout=300, on_wait=on_wait)
    if not server["reused"]:  # else on_wait said so
        console.print(f"Airflow answered after {time.monotonic() - t0:.0f}s (pid {server['pid']}, port {server['port']})")
    return server


def seed_workspace(path: pathlib.Path) -> None:
    """The income example's data (generated, nothing is downloaded), once per workspace."""
    import seed_income

    from airflow_mlpipe.workspace.core import Workspace

    if "income_raw" in Workspace.from_uri(path.as_uri()).datasets.list_names():
        return
    console.print("Seeding the workspace with generated census-income data ...")
    seeded = seed_income.seed(path.as_uri())
    console.print(f"  dataset income_raw v{seeded['income_raw']}, dataset income_to_score v{seeded['income_to_score']}, "
                  f"non-US rows at {seeded['non_us_path']}")


def settle_scheduled_runs(client: AirflowClient, dag_id: str, dag: dict, timeout: float = 60) -> None:
    """Unpausing a scheduled DAG (catchup off) starts its latest scheduled run at once: wait for the
    scheduler to create it and let it finish first, so the triggered run's summary is not mixed with it."""
    import datetime

    run_after = dag.get("next_dagrun_run_after")
    now = datetime.datetime.now(datetime.timezone.utc)
    if not run_after or datetime.datetime.fromisoformat(run_after) > now:
        return  # no time-based run is due: unpausing starts nothing now
    deadline = time.monotonic() + timeout
    with console.status(f"waiting for the scheduler to start the scheduled run of {dag_id} ..."):
        while not client.dag_runs(dag_id) and time.monotonic() < deadline:
            time.sleep(1)
    running = [r for r in client.dag_runs(dag_id) if r["state"] not in ("success", "failed")]
    for run in running:
        console.print(f"Unpausing {dag_id} started its {run['run_type']} run {run['dag_run_id']}; waiting for it ...")
        client.wait(dag_id, run["dag_run_id"], timeout=1800)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=pathlib.Path, default=REPO / ".demo")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--dag", default="income_retrain_v2")
    parser.add_argument("--param", action="append", default=None, help="NAME=JSON_VALUE override (default epochs=30)")
    args = parser.parse_args()
    args.param = args.param if args.param is not None else ["epochs=30"]

    conf = {}
    for item in args.param:
        name, _, raw = item.partition("=")
        try:
            conf[name] = json.loads(raw)
        except ValueError:
            conf[name] = raw

    server = start_airflow(args.home, args.port)
    seed_workspace(args.home / "workspace")
    with AirflowClient(server["url"], username=server["username"], password=server["password"]) as client:
        with console.status(f"waiting for the DAG processor to parse {args.dag} ..."):
            dag = standalone.wait_for_dag(client, args.dag, timeout=300)
        if dag.get("is_paused"):
            client.set_paused(args.dag, False)
            settle_scheduled_runs(client, args.dag, dag)
        run = client.trigger(args.dag, conf)
        run_id = run["dag_run_id"]
        console.print(f"Triggered [bold]{args.dag}[/] through the REST API: run {run_id}, conf {json.dumps(conf)}")
        t0 = time.monotonic()
        with console.status("waiting for the run ...") as status:
            run = client.wait(args.dag, run_id, timeout=1800,
                              on_poll=lambda r: status.update(f"run is {r['state']} ({time.monotonic() - t0:.0f}s)"))
        print_summary(client, args.dag, run, console)
    console.print(f"\nAirflow UI: {server['url']}  (login admin / {server['password']})")
    console.print("Airflow keeps running; stop it with `make stop`.")
    return 0 if run["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
