"""``mlpipe trigger`` (and ``mlpipe datasets register``'s Asset event) against a real Airflow standalone,
plus one run through the official ``apache-airflow-client`` package."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from airflow_mlpipe.cli.main import app
from airflow_mlpipe.client import AirflowClient
from tests.conftest import scaled
from tests.e2e.conftest import wait_for_dag

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

QUICKSTART = "mlpipe_quickstart"
CHECK = "mlpipe_e2e_check"


@pytest.fixture(scope="module")
def airflow(airflow_standalone):
    for dag_id in (QUICKSTART, CHECK):
        wait_for_dag(airflow_standalone, dag_id)
    return airflow_standalone


def mlpipe(airflow, *args: str):
    env = {**airflow["cli_env"], "COLUMNS": "250"}
    return CliRunner().invoke(app, list(args), env=env)


def client(airflow) -> AirflowClient:
    return AirflowClient(airflow["url"], username=airflow["username"], password=airflow["password"])


def run_count(airflow, dag_id: str) -> int:
    with client(airflow) as c:
        return len(c.dag_runs(dag_id))


def step_rows(output: str) -> dict[str, list[str]]:
    """step -> cells of its row in the rich summary table."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) >= 4 and cells[0] in ("prep", "train", "check"):
            rows[cells[0]] = cells
    return rows


def test_trigger_wait_runs_then_reuses(airflow):
    first = mlpipe(airflow, "trigger", QUICKSTART, "--param", "rows=500", "--wait", "--unpause", "--timeout", "600")
    assert first.exit_code == 0, first.output
    assert "triggered mlpipe_quickstart: run " in first.output
    rows = step_rows(first.output)
    assert rows["prep"][1:3] == ["success", "ran"], first.output
    assert rows["train"][1:3] == ["success", "ran"], first.output
    assert "rows=500" in rows["prep"][4]
    assert "registered dataset quickstart_table version" in first.output

    second = mlpipe(airflow, "trigger", QUICKSTART, "--param", "rows=500", "--wait", "--json", "--timeout", "600")
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["state"] == "success"
    assert summary["conf"] == {"rows": 500}
    assert {s["step"]: s["outcome"] for s in summary["steps"]} == {"prep": "reused", "train": "reused"}

    # the run records written by the steps are readable with `mlpipe runs show`
    shown = mlpipe(airflow, "runs", "show", summary["run_id"], "--json")
    assert shown.exit_code == 0, shown.output
    steps = json.loads(shown.stdout)["run"]["steps"]
    assert steps["prep"]["reused"] is True
    assert steps["prep"]["reused_from"]["run_id"] != summary["run_id"]


def test_bad_values_and_unknown_params_are_refused_before_anything_runs(airflow):
    before = run_count(airflow, QUICKSTART)

    typed = mlpipe(airflow, "trigger", QUICKSTART, "--param", "epochs=notanint")
    assert typed.exit_code == 2, typed.output
    assert "param 'epochs' is an integer: cannot use 'notanint'" in typed.output
    assert "Nothing was triggered" in typed.output

    unknown = mlpipe(airflow, "trigger", QUICKSTART, "--param", "epoch=3")
    assert unknown.exit_code == 2, unknown.output
    assert "has no param 'epoch' (did you mean 'epochs'?)" in unknown.output
    assert "declared params: epochs, learning_rate, regenerate_outputs, rows, seed" in unknown.output

    # typed right but outside the Param's schema: Airflow answers HTTP 400 with its reason -> exit 2
    bounds = mlpipe(airflow, "trigger", QUICKSTART, "--param", "epochs=0")
    assert bounds.exit_code == 2, bounds.output
    assert "Airflow refused the conf of mlpipe_quickstart" in bounds.output
    assert "epochs" in bounds.output

    no_dag = mlpipe(airflow, "trigger", "mlpipe_quickstrat")
    assert no_dag.exit_code == 2, no_dag.output
    assert "did you mean 'mlpipe_quickstart'" in no_dag.output

    assert run_count(airflow, QUICKSTART) == before
    assert "Traceback" not in typed.output + unknown.output + bounds.output + no_dag.output


def test_trigger_wait_on_a_paused_dag_fails_fast_with_the_fix(airflow):
    """--wait on a paused DAG would wait forever (the run stays queued): refused at once, nothing queued."""
    with client(airflow) as c:
        was_paused = c.get_dag(QUICKSTART)["is_paused"]
        c.set_paused(QUICKSTART, True)
        try:
            before = run_count(airflow, QUICKSTART)
            started = time.monotonic()
            result = mlpipe(airflow, "trigger", QUICKSTART, "--param", "rows=300", "--wait", "--timeout", "90")
            elapsed = time.monotonic() - started
            assert result.exit_code == 2, result.output
            assert "mlpipe_quickstart is paused" in result.output and "--unpause" in result.output, result.output
            assert "Nothing was triggered" in result.output
            assert elapsed < scaled(60), elapsed
            assert run_count(airflow, QUICKSTART) == before
        finally:
            c.set_paused(QUICKSTART, was_paused)


def test_failed_run_names_the_step_and_shows_its_log_tail(airflow):
    result = mlpipe(airflow, "trigger", CHECK, "--param", "fail=true", "--param", "message=boom-42",
                    "--wait", "--unpause", "--timeout", "600")
    assert result.exit_code == 1, result.output
    assert step_rows(result.output)["check"][1] == "failed"
    assert "step check failed" in result.output
    assert "failing step(s): check" in result.output
    assert "E2E-CHECK: failing on purpose (param fail=true)" in result.output
    assert "check line 2: boom-42" in result.output


def test_registering_a_new_dataset_version_runs_the_pipeline_scheduled_on_it(airflow, tmp_path):
    with client(airflow) as c:
        if c.get_dag(CHECK)["is_paused"]:
            c.set_paused(CHECK, False)
        before = {r["dag_run_id"] for r in c.dag_runs(CHECK)}
    data = tmp_path / "signal"
    data.mkdir()
    (data / "v.txt").write_text(f"signal {time.time()}")
    result = mlpipe(airflow, "datasets", "register", "e2e_signal", str(data))
    assert result.exit_code == 0, result.output
    assert "registered dataset e2e_signal version 1" in result.output
    assert "announced to Airflow" in result.output and "scheduled on it: mlpipe_e2e_check" in result.output

    again = mlpipe(airflow, "datasets", "register", "e2e_signal", str(data))
    assert "already holds this content as version 1" in again.output
    assert "announced" not in again.output  # no new version, no event

    unknown = mlpipe(airflow, "datasets", "register", "e2e_nobody_listens", str(data))
    assert unknown.exit_code == 0, unknown.output
    assert "no DAG is scheduled on (or produces) dataset 'e2e_nobody_listens'" in unknown.output

    deadline = time.monotonic() + scaled(120)
    with client(airflow) as c:
        while True:
            new = [r for r in c.dag_runs(CHECK) if r["dag_run_id"] not in before]
            if new:
                break
            assert time.monotonic() < deadline, "the Asset event did not create a run of mlpipe_e2e_check"
            time.sleep(1)
        assert new[0]["run_type"] == "asset_triggered"
        run = c.wait(CHECK, new[0]["dag_run_id"], timeout=scaled(300))
        assert run["state"] == "success"


def test_official_airflow_client_triggers_and_reads_state_and_xcom(airflow):
    import httpx
    from airflow_client import client as af

    token = httpx.post(f"{airflow['url']}/auth/token",
                       json={"username": airflow["username"], "password": airflow["password"]}).json()["access_token"]
    configuration = af.Configuration(host=airflow["url"], access_token=token)
    with af.ApiClient(configuration) as api:
        runs = af.DagRunApi(api)
        body = af.TriggerDAGRunPostBody(logical_date=None, conf={"rows": 300, "epochs": 5})
        run = runs.trigger_dag_run(QUICKSTART, body)
        deadline = time.monotonic() + scaled(600)
        while True:
            state = runs.get_dag_run(QUICKSTART, run.dag_run_id).state
            if str(getattr(state, "value", state)) in ("success", "failed"):
                break
            assert time.monotonic() < deadline
            time.sleep(1)
        assert str(getattr(state, "value", state)) == "success"
        entry = af.XComApi(api).get_xcom_entry(QUICKSTART, "train", run.dag_run_id, "return_value", deserialize=True)
        inner = getattr(entry, "actual_instance", None) or entry  # a oneOf wrapper in some client versions
        value = inner.value if isinstance(inner.value, dict) else json.loads(inner.value)
        assert value["step"] == "train"
        assert value["reused"] is False  # epochs=5 is new: train re-ran
        assert "train_loss" in value["metrics"]
        assert value["outputs"]["model"]["uri"].startswith(airflow["workspace_uri"])
