"""Bad conf is refused when the run is triggered, over every door, against a real ``airflow standalone``:
the REST API (a bearer token, and the UI form's way: its cookie and a Referer, to the same endpoint), a
backfill, the official ``apache-airflow-client`` and ``mlpipe trigger``. Each refusal is an HTTP 400 (or the
CLI's exit 2) whose message names the param and what to do, and no run is created.

The refusals come from the provider's plugin (airflow_mlpipe/plugins), which Airflow loads by itself (the
``airflow.plugins`` entry point, or the provider info); the rules are airflow_mlpipe/spec/values.py, shared
with the CLI and the tasks."""

from __future__ import annotations

import json
import pathlib

import httpx
import pytest
from typer.testing import CliRunner

from airflow_mlpipe.cli.main import app
from airflow_mlpipe.client import AirflowClient
from tests.e2e.conftest import wait_for_dag

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

QUICKSTART = "mlpipe_quickstart"
CHECK = "mlpipe_e2e_check"
INPUTS = "mlpipe_e2e_inputs"
QUICKSTART_PARAMS = "declared params: epochs, learning_rate, regenerate_outputs, rows, seed"


@pytest.fixture(scope="module")
def airflow(airflow_standalone):
    from airflow_mlpipe.workspace.core import Workspace

    for dag_id in (QUICKSTART, CHECK, INPUTS):
        wait_for_dag(airflow_standalone, dag_id)
    home = pathlib.Path(airflow_standalone["home"])
    table = home / "e2e-table"
    table.mkdir(exist_ok=True)
    (table / "rows.csv").write_text("a,b\n1,2\n")
    ws = Workspace.from_uri(airflow_standalone["workspace_uri"])
    version = ws.datasets.register("e2e_table", table)
    extra = pathlib.Path(airflow_standalone["workspace"]) / "e2e" / "extra.txt"
    extra.parent.mkdir(exist_ok=True)
    extra.write_text("extra file\n")
    token = httpx.post(f"{airflow_standalone['url']}/auth/token", timeout=180,
                       json={"username": airflow_standalone["username"],
                             "password": airflow_standalone["password"]}).json()["access_token"]
    return {**airflow_standalone, "token": token, "e2e_table_version": version.version}


def client(airflow) -> AirflowClient:
    return AirflowClient(airflow["url"], token=airflow["token"], timeout=180)


def run_ids(airflow, dag_id: str) -> set[str]:
    with client(airflow) as c:
        return {r["dag_run_id"] for r in c.dag_runs(dag_id)}


def post_trigger(airflow, dag_id: str, conf, *, ui: bool = False) -> httpx.Response:
    """POST /api/v2/dags/{dag_id}/dagRuns as a script does (bearer token) or as the UI form does (the
    ``_token`` cookie and a Referer: Airflow 3.3's form posts to this same endpoint)."""
    url = f"{airflow['url']}/api/v2/dags/{dag_id}/dagRuns"
    body = {"logical_date": None, "conf": conf}
    if ui:
        return httpx.post(url, json=body, cookies={"_token": airflow["token"]}, timeout=180,
                          headers={"Referer": f"{airflow['url']}/dags/{dag_id}"})
    return httpx.post(url, json=body, headers={"Authorization": f"Bearer {airflow['token']}"}, timeout=180)


def mlpipe(airflow, *args: str):
    env = {**airflow["cli_env"], "COLUMNS": "250"}
    return CliRunner().invoke(app, list(args), env=env)


# (dag_id, conf, fragments the 400's detail must contain)
REFUSED = {
    "unknown key": (QUICKSTART, {"epoch": 3}, ["has no param 'epoch'", "(did you mean 'epochs'?)", QUICKSTART_PARAMS]),
    "integer beyond 53 bits": (QUICKSTART, {"seed": 10**30}, ["param 'seed'", "-9007199254740991..9007199254740991"]),
    "trailing newline": (CHECK, {"message": "hello\n"}, ["param 'message'", "control character"]),
    "control character": (CHECK, {"message": "a\x1bb"}, ["param 'message'", "control character"]),
    "model for a dataset": (INPUTS, {"data": "models:/e2e_model/1"}, ["param 'data'", "a model reference"]),
    "URI for a dataset": (INPUTS, {"data": "file:///etc"}, ["param 'data'", "is a URI"]),
    "URI for a path": (INPUTS, {"extra": "s3://bucket/e2e/extra.txt"}, ["param 'extra'", "is a URI"]),
    "absolute path": (INPUTS, {"extra": "/etc/passwd"}, ["param 'extra'", "is absolute"]),
    "path leaving the workspace": (INPUTS, {"extra": "e2e/../../etc/passwd"}, ["param 'extra'", "'..'"]),
    "dataset name too long": (INPUTS, {"data": "d" * 201}, ["param 'data'", "longer than 200 characters"]),
    "path segment too long": (INPUTS, {"extra": "e2e/" + "x" * 300}, ["param 'extra'", "longer than 255 bytes"]),
    "unregistered dataset": (INPUTS, {"data": "e2e_tabel"},
                             ["param 'data'", "dataset 'e2e_tabel' is not registered", "(did you mean 'e2e_table'?)"]),
    "unregistered version": (INPUTS, {"data": "e2e_table:7"}, ["param 'data'", "dataset 'e2e_table' has no version 7"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_rest_trigger_refuses_with_400_and_creates_no_run(airflow, case):
    dag_id, conf, fragments = REFUSED[case]
    before = run_ids(airflow, dag_id)
    response = post_trigger(airflow, dag_id, conf)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    for fragment in fragments:
        assert fragment in detail, detail
    assert "Nothing was triggered" in detail
    assert run_ids(airflow, dag_id) == before


def test_the_ui_form_door_is_refused_the_same_way(airflow):
    """The form posts to the public endpoint with the session cookie and a Referer (Airflow 3.3.2's
    ``triggerDagRun``); the refusal is the same 400, which the form shows as its error."""
    before = run_ids(airflow, QUICKSTART)
    response = post_trigger(airflow, QUICKSTART, {"rows": 2000, "seed": 7, "epochs": 30, "learning_rate": 0.5,
                                                   "regenerate_outputs": False, "epoch": 3}, ui=True)
    assert response.status_code == 400, response.text
    assert "has no param 'epoch' (did you mean 'epochs'?)" in response.json()["detail"]
    assert run_ids(airflow, QUICKSTART) == before


def test_a_backfill_with_a_bad_conf_is_refused(airflow):
    body = {"dag_id": QUICKSTART, "from_date": "2026-01-01T00:00:00Z", "to_date": "2026-01-02T00:00:00Z",
            "dag_run_conf": {"epoch": 3}}
    response = httpx.post(f"{airflow['url']}/api/v2/backfills", json=body, timeout=180,
                          headers={"Authorization": f"Bearer {airflow['token']}"})
    assert response.status_code == 400, response.text
    assert "has no param 'epoch' (did you mean 'epochs'?)" in response.json()["detail"]


def test_no_check_without_a_login_leaks_nothing(airflow):
    """An anonymous caller gets Airflow's own 401, not the list of params."""
    response = httpx.post(f"{airflow['url']}/api/v2/dags/{QUICKSTART}/dagRuns", timeout=180,
                          json={"logical_date": None, "conf": {"epoch": 3}})
    assert response.status_code == 401, response.text
    assert "epochs" not in response.text


def test_a_good_conf_passes_untouched(airflow):
    """Values of every kind that are right pass, and the run gets exactly the conf that was sent (the plugin
    read the body and handed the same bytes on). The DAG stays paused: the run is only queued (that the
    tasks accept these values is the same rules, tests/spec/test_spec_values.py)."""
    conf = {"data": f"e2e_table:{airflow['e2e_table_version']}", "extra": "e2e/extra.txt",
            "label": "ok \u00e9", "count": 9007199254740991}
    before = run_ids(airflow, INPUTS)
    response = post_trigger(airflow, INPUTS, conf)
    assert response.status_code == 200, response.text
    run = response.json()
    assert run["conf"] == conf
    assert "x-mlpipe-conf-check" not in response.headers  # the registry was read: nothing left unchecked
    with client(airflow) as c:
        assert c.get_run(INPUTS, run["dag_run_id"])["conf"] == conf
    assert run_ids(airflow, INPUTS) == before | {run["dag_run_id"]}


def test_official_client_gets_bad_request(airflow):
    from airflow_client import client as af
    from airflow_client.client.exceptions import BadRequestException

    configuration = af.Configuration(host=airflow["url"], access_token=airflow["token"])
    before = run_ids(airflow, QUICKSTART)
    with af.ApiClient(configuration) as api:
        runs = af.DagRunApi(api)
        for conf, fragment in (({"epoch": 3}, "has no param 'epoch' (did you mean 'epochs'?)"),
                               ({"seed": 10**30}, "param 'seed'")):
            with pytest.raises(af.ApiException) as info:
                runs.trigger_dag_run(QUICKSTART, af.TriggerDAGRunPostBody(logical_date=None, conf=conf))
            assert isinstance(info.value, BadRequestException)
            assert info.value.status == 400
            assert fragment in json.loads(info.value.body)["detail"]
    assert run_ids(airflow, QUICKSTART) == before


# (args after `mlpipe trigger DAG`, fragments of the output); refused by the CLI before it sends anything
CLI_REFUSED = {
    "trailing newline": (CHECK, ["--param", "message=hello\n"], ["param 'message'", "control character"]),
    "underscore in an integer": (QUICKSTART, ["--param", "seed=1_0"], ["param 'seed' is an integer: cannot use '1_0'"]),
    "non-ASCII digits": (QUICKSTART, ["--param", "seed=\u0661\u0662"], ["param 'seed' is an integer: cannot use"]),
    "integer beyond 53 bits": (QUICKSTART, ["--param", "seed=" + "9" * 30],
                               ["param 'seed'", "-9007199254740991..9007199254740991"]),
    "model for a dataset": (INPUTS, ["--param", "data=models:/e2e_model/1"], ["param 'data'", "a model reference"]),
    "URI for a path": (INPUTS, ["--param", "extra=s3://bucket/x"], ["param 'extra'", "is a URI"]),
    "unknown key in --conf-json": (QUICKSTART, ["--conf-json", '{"epoch": 3}'],
                                   ["has no param 'epoch' (did you mean 'epochs'?)", QUICKSTART_PARAMS]),
}


@pytest.mark.parametrize("case", sorted(CLI_REFUSED))
def test_mlpipe_trigger_refuses_before_sending(airflow, case):
    dag_id, args, fragments = CLI_REFUSED[case]
    before = run_ids(airflow, dag_id)
    result = mlpipe(airflow, "trigger", dag_id, *args)
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())  # rich wraps long lines
    for fragment in fragments:
        assert fragment in out, out
    assert "Nothing was triggered" in out
    assert "Airflow refused" not in out  # the CLI's own refusal: nothing was sent
    assert "Traceback" not in out
    assert run_ids(airflow, dag_id) == before


def test_mlpipe_trigger_shows_the_servers_refusal_of_an_unregistered_dataset(airflow):
    """The registry is the API server's to check: the CLI sends, and prints the 400's reason."""
    before = run_ids(airflow, INPUTS)
    result = mlpipe(airflow, "trigger", INPUTS, "--param", "data=e2e_tabel")
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split())
    assert "Airflow refused the conf of mlpipe_e2e_inputs" in out
    assert "dataset 'e2e_tabel' is not registered" in out and "(did you mean 'e2e_table'?)" in out
    assert out.count("Nothing was triggered") == 1, out
    assert run_ids(airflow, INPUTS) == before
