"""The seeds' published-pipeline and retrain-on-new-data scenarios against a real `airflow standalone`:
the endpoint DAG runs v2 by default, v1 when asked (or when the default is changed with the CLI), refuses
an unknown version with the published ones; registering a new version of the raw dataset with the CLI
triggers the retraining pipeline through its Asset schedule."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from airflow_mlpipe.client import AirflowApiError, AirflowClient
from tests.conftest import scaled

pytestmark = pytest.mark.integration
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "scripts"))


@pytest.fixture(scope="module")
def seeded(airflow_standalone):
    import seed_income

    seed_income.seed(airflow_standalone["workspace_uri"], us_rows=3000, non_us_rows=2000, score_rows=1000)
    client = AirflowClient(airflow_standalone["url"], username=airflow_standalone["username"],
                           password=airflow_standalone["password"])
    for dag_id in ("income_retrain", "income_retrain_v1", "income_retrain_v2"):
        deadline = time.monotonic() + scaled(120)
        while True:
            try:
                client.get_dag(dag_id)
                break
            except AirflowApiError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        client.set_paused(dag_id, False)
    _settle(client, "income_retrain_v2")  # unpausing starts the latest weekly run: let it finish first
    yield client
    client.close()


def _settle(client: AirflowClient, dag_id: str, timeout: float = 300) -> None:
    """Unpausing a weekly DAG makes the scheduler start its latest scheduled run: wait for that run to
    appear, then for every run of the DAG to end."""
    deadline = time.monotonic() + scaled(timeout)
    while not client.dag_runs(dag_id):
        assert time.monotonic() < deadline, f"unpausing {dag_id} started no scheduled run"
        time.sleep(1)
    while any(r["state"] not in ("success", "failed") for r in client.dag_runs(dag_id)):
        assert time.monotonic() < deadline, f"{dag_id} runs did not finish"
        time.sleep(1)


def _endpoint(client: AirflowClient, conf: dict) -> tuple[str, dict]:
    run = client.trigger("income_retrain", conf)
    run = client.wait("income_retrain", run["dag_run_id"], timeout=scaled(600))
    return run["state"], client.xcom("income_retrain", run["dag_run_id"], "run_pipeline", key="endpoint_version")


def _cli(airflow_standalone, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **airflow_standalone["cli_env"]}
    return subprocess.run([sys.executable, "-m", "airflow_mlpipe.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=scaled(300))


def test_endpoint_runs_the_default_version_or_the_requested_one(seeded, airflow_standalone):
    client = seeded
    state, chosen = _endpoint(client, {})
    assert state == "success" and chosen == {"version": 2, "dag_id": "income_retrain_v2"}
    state, chosen = _endpoint(client, {"pipeline_version": 1, "epochs": 3})
    assert state == "success" and chosen == {"version": 1, "dag_id": "income_retrain_v1"}
    v1_runs = client.dag_runs("income_retrain_v1")
    assert v1_runs[0]["conf"] == {"epochs": 3}, "the rest of the conf is passed through"

    with pytest.raises(AirflowApiError) as refused:
        client.trigger("income_retrain", {"pipeline_version": 7})
    assert refused.value.status == 400 and "[None, 1, 2]" in str(refused.value)

    changed = _cli(airflow_standalone, "endpoints", "set-default", "income_retrain", "1",
                   "--definitions", str(airflow_standalone["dags"] / "pipelines"))
    assert changed.returncode == 0, changed.stderr
    state, chosen = _endpoint(client, {})
    assert state == "success" and chosen["version"] == 1
    assert _cli(airflow_standalone, "endpoints", "set-default", "income_retrain", "2", "--definitions",
                str(airflow_standalone["dags"] / "pipelines")).returncode == 0


def test_new_raw_data_triggers_retraining_through_the_asset_schedule(seeded, airflow_standalone, tmp_path):
    client = seeded
    _settle(client, "income_retrain_v2")
    before = {r["dag_run_id"] for r in client.dag_runs("income_retrain_v2")}
    data = tmp_path / "raw"
    subprocess.run([sys.executable, os.path.join(REPO, "dags_examples/src/income/make_data.py"), "--rows", "2500",
                    "--seed", "77", "--out", str(data / "us.csv")], check=True, capture_output=True)
    registered = _cli(airflow_standalone, "datasets", "register", "income_raw", str(data))
    assert registered.returncode == 0, registered.stderr
    assert "announced to Airflow" in registered.stdout and "income_retrain_v2" in registered.stdout

    deadline = time.monotonic() + scaled(180)
    while True:
        new = [r for r in client.dag_runs("income_retrain_v2") if r["dag_run_id"] not in before]
        if new:
            break
        assert time.monotonic() < deadline, "no run was triggered by the new dataset version"
        time.sleep(1)
    assert new[0]["run_type"] == "asset_triggered"
    run = client.wait("income_retrain_v2", new[0]["dag_run_id"], timeout=scaled(600))
    assert run["state"] == "success"
    prep = client.xcom("income_retrain_v2", run["dag_run_id"], "prep")
    assert prep["reused"] is False, "new data: the prep step ran"
