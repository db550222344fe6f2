"""``mlpipe trigger`` and the Asset event of ``mlpipe datasets register`` against a fake Airflow client
(the real thing is in tests/e2e/test_cli_trigger.py)."""

from __future__ import annotations

import json

import pytest

import airflow_mlpipe.client as client_module
from airflow_mlpipe.cli.main import app
from airflow_mlpipe.client import AirflowApiError
from tests.cli.conftest import make_tree

PARAMS = {
    "rows": {"value": 2000, "schema": {"type": "integer", "minimum": 100}, "description": None},
    "epochs": {"value": 30, "schema": {"type": "integer"}, "description": None},
    "regenerate_outputs": {"value": False, "schema": {"type": "boolean"}, "description": None},
}
LOG = [{"event": f"line {i}", "level": "info"} for i in range(50)] + [{"event": "::group::Post Execute"}] + [
    {"event": "Task failed with exception", "level": "error",
     "error_detail": [{"exc_type": "StepFailed", "exc_value": "train.py exited with code 1"}]}
]


class FakeAirflow:
    """Stands in for AirflowClient; ``state`` of the class configures the scenario."""

    scenario: dict = {}
    calls: list = []

    def __init__(self, url=None, *, token=None, username=None, password=None, timeout=30.0):
        self.url = url or "http://fake:8080"

    def has_credentials(self):
        return True

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def get_dag_details(self, dag_id):
        if dag_id != "quick":
            raise AirflowApiError("GET /dags answered HTTP 404", 404, "not found")
        return {"dag_id": dag_id, "is_paused": self.scenario.get("paused", False), "params": PARAMS}

    def dag_ids(self):
        return ["quick", "other"]

    def set_paused(self, dag_id, paused):
        self.calls.append(("pause", dag_id, paused))

    def trigger(self, dag_id, conf=None, run_id=None):
        self.calls.append(("trigger", dag_id, conf))
        if self.scenario.get("refuse"):
            raise AirflowApiError("POST answered HTTP 400", 400, "Invalid input for param rows: 5 is less than 100\n\n"
                                 "Failed validating 'minimum' in schema:\n    {'type': 'integer'}")
        return {"dag_run_id": "manual__1", "state": "queued", "conf": conf}

    def wait(self, dag_id, run_id, timeout=1800, interval=1.0, on_poll=None):
        if on_poll:
            on_poll({"dag_run_id": run_id, "state": "running"})
        return {"dag_run_id": run_id, "state": self.scenario.get("final", "success"), "conf": {}}

    def task_instances(self, dag_id, run_id):
        failed = self.scenario.get("final") == "failed"
        return [
            {"task_id": "prep", "state": "success", "duration": 1.5, "try_number": 1, "map_index": -1,
             "start_date": "2026-01-01T00:00:01Z"},
            {"task_id": "train", "state": "failed" if failed else "success", "duration": 2.0, "try_number": 1,
             "map_index": -1, "start_date": "2026-01-01T00:00:03Z"},
        ]

    def xcom(self, dag_id, run_id, task_id, key="return_value", map_index=-1):
        if task_id == "prep":
            return {"step": "prep", "reused": True, "metrics": {"rows": 500},
                    "outputs": {"table": {"uri": "file:///ws/outputs/t", "key": "k", "digest": "d"}},
                    "registered": {"quickstart_table": 1}}
        if self.scenario.get("final") == "failed":
            return None
        return {"step": "train", "reused": False, "metrics": {"accuracy": 0.912345}, "outputs": {}}

    def task_log_events(self, dag_id, run_id, task_id, try_number, map_index=-1):
        return LOG

    def find_asset(self, uri):
        if self.scenario.get("asset_error"):
            raise AirflowApiError("GET /assets answered HTTP 403: forbidden", 403, "forbidden")
        if not self.scenario.get("asset"):
            return None
        return {"id": 7, "uri": uri, "scheduled_dags": [{"dag_id": "retrain"}]}

    def create_asset_event(self, asset_id, extra=None):
        self.calls.append(("event", asset_id, extra))
        return {"id": 99, "asset_id": asset_id}


@pytest.fixture
def fake(monkeypatch):
    FakeAirflow.scenario = {}
    FakeAirflow.calls = []
    monkeypatch.setattr(client_module, "AirflowClient", FakeAirflow)
    monkeypatch.setenv("MLPIPE_AIRFLOW_URL", "http://fake:8080")
    return FakeAirflow


def triggers(fake):
    return [c for c in fake.calls if c[0] == "trigger"]


def test_trigger_wait_prints_the_step_table(runner, fake):
    result = runner.invoke(app, ["trigger", "quick", "--param", "rows=500", "--param", "regenerate_outputs=no", "--wait"])
    assert result.exit_code == 0, result.output
    assert triggers(fake) == [("trigger", "quick", {"rows": 500, "regenerate_outputs": False})]
    assert "triggered quick: run manual__1" in result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 4}
    assert "reused" in lines["prep"] and "rows=500" in lines["prep"]
    assert "ran" in lines["train"] and "accuracy=0.9123" in lines["train"]
    assert "prep registered dataset quickstart_table version 1" in result.output


def test_trigger_json_without_wait(runner, fake):
    result = runner.invoke(app, ["trigger", "quick", "--conf-json", '{"rows": 300}', "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"dag_id": "quick", "run_id": "manual__1", "state": "queued",
                                         "conf": {"rows": 300}}


def test_failed_run_exits_1_with_the_failing_step_and_its_log_tail(runner, fake):
    fake.scenario["final"] = "failed"
    result = runner.invoke(app, ["trigger", "quick", "--wait"])
    assert result.exit_code == 1, result.output
    assert "step train failed (try 1); last 30 log lines:" in result.output
    assert "StepFailed: train.py exited with code 1" in result.output
    assert "ERROR: Task failed with exception" in result.output
    assert "  line 49\n" in result.output and "  line 22\n" in result.output
    assert "  line 21\n" not in result.output  # only the last 30 lines
    assert "::group::" not in result.output  # Airflow's log-folding markers are dropped
    assert "failing step(s): train" in result.output

    as_json = runner.invoke(app, ["trigger", "quick", "--wait", "--json"])
    assert as_json.exit_code == 1
    summary = json.loads(as_json.stdout)
    assert summary["failed_steps"] == ["train"]
    assert summary["steps"][1]["log_tail"][-1] == "StepFailed: train.py exited with code 1"


def test_conf_refused_by_airflow_exits_2_with_its_reason(runner, fake):
    fake.scenario["refuse"] = True
    result = runner.invoke(app, ["trigger", "quick", "--param", "rows=5"])
    assert result.exit_code == 2, result.output
    assert "Airflow refused the conf of quick: Invalid input for param rows: 5 is less than 100" in result.output
    assert "Failed validating" not in result.output  # the first line of the reason, not the schema dump
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trigger", "quick", "--param", "epoch=3"], "quick has no param 'epoch' (did you mean 'epochs'?); "
                                                     "declared params: epochs, regenerate_outputs, rows"),
        (["trigger", "quick", "--param", "epochs=notanint"], "param 'epochs' is an integer: cannot use 'notanint'"),
        (["trigger", "quick", "--version", "2"], "--version: quick is not a pipeline endpoint"),
        (["trigger", "quick", "--version", "1_0"], "--version '1_0': expected a version number like 2"),
        (["trigger", "quick", "--version", "\u0661"], "expected a version number like 2"),  # click's int() takes it
        (["trigger", "quick", "--version", "0"], "--version '0': expected a version number like 2"),
        (["trigger", "quick", "--param", "epochs=1_0"], "param 'epochs' is an integer: cannot use '1_0'"),
        (["trigger", "quik"], "has no pipeline 'quik' (did you mean 'quick'?)"),
    ],
)
def test_refused_locally_and_nothing_triggered(runner, fake, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert triggers(fake) == []


def test_paused_dag_warns_or_unpauses(runner, fake):
    fake.scenario["paused"] = True
    warned = runner.invoke(app, ["trigger", "quick"])
    assert warned.exit_code == 0
    assert "quick is paused" in warned.output and "--unpause" in warned.output
    unpaused = runner.invoke(app, ["trigger", "quick", "--unpause"])
    assert "unpaused quick" in unpaused.output
    assert ("pause", "quick", False) in fake.calls


def test_wait_on_a_paused_dag_is_refused_with_the_fix(runner, fake):
    fake.scenario["paused"] = True
    result = runner.invoke(app, ["trigger", "quick", "--wait"])
    assert result.exit_code == 2, result.output
    assert "quick is paused" in result.output and "--unpause" in result.output
    assert "Nothing was triggered" in result.output
    assert triggers(fake) == []


def test_no_credentials_and_unreachable_airflow(runner, monkeypatch):
    monkeypatch.setenv("MLPIPE_AIRFLOW_URL", "http://127.0.0.1:9")
    none = runner.invoke(app, ["trigger", "quick"])
    assert none.exit_code == 2
    assert "no credentials for Airflow at http://127.0.0.1:9: set MLPIPE_AIRFLOW_TOKEN" in none.output
    down = runner.invoke(app, ["trigger", "quick"], env={"MLPIPE_AIRFLOW_TOKEN": "t"})
    assert down.exit_code == 3, down.output
    assert "cannot reach Airflow at http://127.0.0.1:9" in down.output
    assert "Traceback" not in down.output


def test_password_stdin_needs_a_user(runner, monkeypatch):
    monkeypatch.setenv("MLPIPE_AIRFLOW_URL", "http://127.0.0.1:9")
    result = runner.invoke(app, ["trigger", "quick", "--password-stdin"], input="secret\n")
    assert result.exit_code == 2
    assert "MLPIPE_AIRFLOW_USERNAME" in result.output


# ------------------------------------------------------------------------------------ asset events


def register(runner, ws_dir, tmp_path, content="1", *extra):
    data = make_tree(tmp_path / f"d-{content}", {"a.csv": content})
    return runner.invoke(app, ["datasets", "register", "income_raw", str(data), "--workspace", str(ws_dir), *extra])


def test_new_version_emits_the_asset_event(runner, fake, ws, ws_dir, tmp_path):
    fake.scenario["asset"] = True
    result = register(runner, ws_dir, tmp_path)
    assert result.exit_code == 0, result.output
    assert "announced to Airflow at http://fake:8080 (asset x-mlpipe://datasets/income_raw); scheduled on it: retrain" \
        in result.output
    version = ws.datasets.get("income_raw")
    extra = {"version": 1, "digest": version.digest, "source": "mlpipe datasets"}
    assert [c for c in fake.calls if c[0] == "event"] == [("event", 7, extra)]

    same = register(runner, ws_dir, tmp_path)
    assert "already holds this content" in same.output
    assert len([c for c in fake.calls if c[0] == "event"]) == 1  # no new version, no event

    notified = runner.invoke(app, ["datasets", "notify", "income_raw:1", "--workspace", str(ws_dir), "--json"])
    assert notified.exit_code == 0, notified.output
    assert json.loads(notified.stdout)["asset_event"]["status"] == "emitted"


def test_unknown_asset_is_said_plainly(runner, fake, ws, ws_dir, tmp_path):
    result = register(runner, ws_dir, tmp_path, "2", "--json")
    assert result.exit_code == 0, result.output
    event = json.loads(result.stdout)["asset_event"]
    assert event["status"] == "unknown_asset"
    assert "no DAG is scheduled on (or produces) dataset 'income_raw'" in event["message"]


def test_failed_announcement_keeps_the_version_and_says_how_to_retry(runner, fake, ws, ws_dir, tmp_path):
    fake.scenario["asset_error"] = True
    result = register(runner, ws_dir, tmp_path, "3")
    assert result.exit_code == 1, result.output
    assert "dataset income_raw version 1 is registered, but Airflow was not told" in result.output
    assert "mlpipe datasets notify income_raw:1" in result.output
    assert ws.datasets.get("income_raw").version == 1


def test_no_notify_and_no_airflow(runner, ws, ws_dir, tmp_path, monkeypatch):
    quiet = register(runner, ws_dir, tmp_path, "4", "--no-notify", "--json")
    assert json.loads(quiet.stdout)["asset_event"] is None
    monkeypatch.setenv("MLPIPE_AIRFLOW_URL", "http://127.0.0.1:9")
    creds = register(runner, ws_dir, tmp_path, "5", "--json")
    assert json.loads(creds.stdout)["asset_event"]["status"] == "skipped"
    assert "no credentials for Airflow" in json.loads(creds.stdout)["asset_event"]["message"]
