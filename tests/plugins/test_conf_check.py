"""The trigger-time conf check (airflow_mlpipe/plugins/conf_check.py) in parts; the whole, in a real Airflow,
is tests/e2e/test_trigger_refusals.py.

- the ASGI plumbing, around a real Starlette app over httpx: which requests are looked at, the body handed on
  byte for byte, the 400, the header. The verdict comes from a subclass whose ``check`` returns a fixed
  answer (the real one needs Airflow's metadata DB and auth manager, which the e2e test has);
- what a serialized DAG tells the check (Airflow's own serialization round trip of real DAGs);
- the registry check against real workspaces, reachable or not.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import pathlib

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from airflow_mlpipe.plugins import conf_check
from airflow_mlpipe.plugins.conf_check import (
    CHECK_HEADER,
    ConfCheckMiddleware,
    Pipeline,
    RegistryCheck,
    Verdict,
    WorkspaceUnreachable,
    describe_dag,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------- plumbing


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"path": request.url.path, "body": body.decode("utf-8")})


ECHO = Starlette(routes=[Route("/{path:path}", _echo, methods=["GET", "POST", "PATCH"])])


class FixedVerdict(ConfCheckMiddleware):
    def __init__(self, app, verdict: Verdict | Exception):
        super().__init__(app)
        self.verdict = verdict
        self.seen: list[tuple[str | None, bytes]] = []

    async def check(self, scope, dag_id, body):
        self.seen.append((dag_id, body))
        if isinstance(self.verdict, Exception):
            raise self.verdict
        return self.verdict


def _send(middleware, method: str, path: str, content=None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=middleware)
        async with httpx.AsyncClient(transport=transport, base_url="http://airflow") as client:
            return await client.request(method, path, content=content)

    return asyncio.run(go())


def _chunks(*parts: bytes):
    async def gen():
        for part in parts:
            yield part

    return gen()


def test_a_trigger_body_is_checked_and_handed_on_byte_for_byte():
    mw = FixedVerdict(ECHO, Verdict())
    body = json.dumps({"logical_date": None, "conf": {"label": "caf\u00e9", "n": 1}}).encode()
    response = _send(mw, "POST", "/api/v2/dags/my_dag/dagRuns", content=_chunks(body[:7], body[7:20], body[20:]))
    assert response.status_code == 200
    assert response.json() == {"path": "/api/v2/dags/my_dag/dagRuns", "body": body.decode()}
    assert mw.seen == [("my_dag", body)]
    assert CHECK_HEADER.decode() not in response.headers


def test_a_refusal_is_a_400_with_airflows_error_shape_and_never_reaches_airflow():
    mw = FixedVerdict(ECHO, Verdict(refusal="p has no param 'x'. Nothing was triggered"))
    response = _send(mw, "POST", "/api/v2/dags/p/dagRuns", content=b'{"conf": {"x": 1}}')
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "p has no param 'x'. Nothing was triggered"}


def test_an_incomplete_check_lets_the_run_through_and_says_so():
    mw = FixedVerdict(ECHO, Verdict(note="datasets not checked: workspace file:///gone is not a folder \u00e9\n"))
    response = _send(mw, "POST", "/api/v2/dags/p/dagRuns", content=b'{"conf": {}}')
    assert response.status_code == 200
    assert response.headers[CHECK_HEADER.decode()] == "datasets not checked: workspace file:///gone is not a folder ??"


def test_backfills_are_checked_too():
    mw = FixedVerdict(ECHO, Verdict())
    for path in ("/api/v2/backfills", "/api/v2/backfills/dry_run"):
        assert _send(mw, "POST", path, content=b'{"dag_id": "p"}').status_code == 200
    assert mw.seen == [(None, b'{"dag_id": "p"}')] * 2


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/api/v2/dags/p/dagRuns"),
        ("PATCH", "/api/v2/dags/p/dagRuns"),
        ("POST", "/api/v2/dags/p/dagRuns/list"),
        ("POST", "/api/v2/dags/p/dagRuns/r1/clear"),
        ("POST", "/api/v2/dags/p/clearTaskInstances"),
        ("POST", "/api/v2/pools"),
        ("POST", "/auth/token"),
    ],
)
def test_other_requests_are_not_looked_at(method, path):
    mw = FixedVerdict(ECHO, Verdict(refusal="no"))
    response = _send(mw, method, path, content=b'{"conf": {"x": 1}}' if method != "GET" else None)
    assert response.status_code == 200 and mw.seen == []


def test_a_body_too_big_to_check_goes_on_whole_and_unchecked(monkeypatch):
    monkeypatch.setattr(conf_check, "MAX_BODY_BYTES", 10)
    mw = FixedVerdict(ECHO, Verdict(refusal="no"))
    parts = [b'{"conf": ', b'{"label": "' + b"x" * 40 + b'"}', b"}"]
    response = _send(mw, "POST", "/api/v2/dags/p/dagRuns", content=_chunks(*parts))
    assert response.status_code == 200
    assert response.json()["body"] == b"".join(parts).decode()
    assert mw.seen == []


def test_a_failing_check_lets_the_request_through(caplog):
    mw = FixedVerdict(ECHO, RuntimeError("database is locked"))
    response = _send(mw, "POST", "/api/v2/dags/p/dagRuns", content=b'{"conf": {"x": 1}}')
    assert response.status_code == 200 and response.json()["body"] == '{"conf": {"x": 1}}'
    assert "the trigger-time conf check failed" in caplog.text


# ------------------------------------------------------------------------------------------- serialized DAGs


def _round_trip(dag):
    from airflow.serialization.serialized_objects import DagSerialization

    return DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))


def test_a_factory_pipeline_is_described_by_its_serialized_dag():
    from airflow_mlpipe.factory import load_dag

    dag = load_dag(REPO / "dags_examples" / "income_retrain_v1.py", "pipelines/income_retrain_v1.yaml")
    pipeline = describe_dag(_round_trip(dag))
    assert pipeline is not None and pipeline.strict is True
    assert sorted(pipeline.declared) == ["epochs", "learning_rate", "regenerate_outputs", "training_data"]
    data = pipeline.declared["training_data"]
    assert data["value"] == "income_raw:latest" and data["schema"]["mlpipe_type"] == "dataset"
    assert pipeline.declared["epochs"]["schema"]["maximum"] == 500


def _dag(*, strict: bool | None, mapped: bool = False, mlpipe: bool = True):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Param

    from airflow_mlpipe.operators.step import MlpipeStepOperator

    kwargs = {"script": "a.py", "source_directory": str(REPO), "environment": {"python": "python3"}}
    if strict is not None:
        kwargs["strict_conf"] = strict
    with DAG("hand", schedule=None, start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
             params={"epochs": Param(20, type="integer", minimum=1)}) as dag:
        EmptyOperator(task_id="start")
        if mlpipe and mapped:
            MlpipeStepOperator.partial(task_id="step", **kwargs).expand(partition=[0, 1])
        elif mlpipe:
            MlpipeStepOperator(task_id="step", **kwargs)
    return dag


def test_a_hand_written_dag_with_mlpipe_steps_is_a_pipeline_and_strict_conf_is_honoured():
    assert describe_dag(_round_trip(_dag(strict=None))) == Pipeline(
        {"epochs": {"value": 20, "schema": {"type": "integer", "minimum": 1}}}, True)
    assert describe_dag(_round_trip(_dag(strict=False))).strict is False
    assert describe_dag(_round_trip(_dag(strict=False, mapped=True))).strict is False
    assert describe_dag(_round_trip(_dag(strict=None, mapped=True))).strict is True


def test_a_dag_without_mlpipe_operators_is_not_checked():
    assert describe_dag(_round_trip(_dag(strict=None, mlpipe=False))) is None


# ------------------------------------------------------------------------------------------- the registry


def _connection(monkeypatch, uri: str, **extra) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT",
                       json.dumps({"conn_type": "mlpipe", "extra": {"workspace": uri, **extra}}))


def test_registry_check_names_the_missing_dataset_with_a_hint(monkeypatch, tmp_path):
    from airflow_mlpipe.workspace.core import Workspace

    data = tmp_path / "data"
    data.mkdir()
    (data / "t.csv").write_text("a\n1\n")
    ws_dir = tmp_path / "ws"
    Workspace.from_uri(ws_dir.as_uri()).datasets.register("income_raw", data)
    _connection(monkeypatch, ws_dir.as_uri())
    check = RegistryCheck()
    assert check.problems([("data", "income_raw"), ("data", "income_raw:1"), ("data", "income_raw:latest")]) == []
    assert check.problems([("data", "income_rwa:latest"), ("other", "income_raw:4")]) == [
        f"param 'data': dataset 'income_rwa' is not registered in {ws_dir.as_uri()} (registered: income_raw) "
        "(did you mean 'income_raw'?)",
        f"param 'other': dataset 'income_raw' has no version 4 in {ws_dir.as_uri()}; versions are 1..1",
    ]


def test_an_unreachable_workspace_is_reported_not_refused(monkeypatch, tmp_path):
    _connection(monkeypatch, (tmp_path / "not-mounted").as_uri())
    with pytest.raises(WorkspaceUnreachable, match="is not a folder on the API server"):
        RegistryCheck().problems([("data", "income_raw")])


def test_an_s3_workspace_nobody_answers_is_unreachable(monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _connection(monkeypatch, "s3://bucket/ws", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    with pytest.raises(WorkspaceUnreachable, match="s3://bucket/ws"):
        RegistryCheck().problems([("data", "income_raw")])


def test_a_missing_connection_is_unreachable(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT", '{"conn_type": "mlpipe", "extra": {}}')
    with pytest.raises(WorkspaceUnreachable, match="connection 'mlpipe_default'"):
        RegistryCheck().problems([("data", "income_raw")])


# ------------------------------------------------------------------------------------------- check()
# The Airflow parts of check() (the metadata DB behind self.pipelines, the auth manager behind authorized())
# answer fixed values here; everything else is real. The e2e test runs them for real.

DECLARED = {"data": {"value": "income_raw:latest", "schema": {"mlpipe_type": "dataset", "type": "string"}},
            "n": {"value": 1, "schema": {"mlpipe_type": "integer", "type": "integer"}}}


class _Pipelines:
    def get(self, dag_id):
        return Pipeline(DECLARED, True) if dag_id == "p" else None


def _check(monkeypatch, body: dict, dag_id: str = "p") -> Verdict:
    async def allowed(scope, dag_id):
        return True

    monkeypatch.setattr(conf_check, "authorized", allowed)
    mw = ConfCheckMiddleware(ECHO)
    mw.pipelines = _Pipelines()
    return asyncio.run(mw.check({"type": "http"}, dag_id, json.dumps(body).encode()))


def test_check_refuses_unknown_keys_and_bad_values_before_reading_the_workspace(monkeypatch, tmp_path):
    _connection(monkeypatch, (tmp_path / "not-mounted").as_uri())
    verdict = _check(monkeypatch, {"conf": {"nn": 1, "n": 2**60}})
    assert verdict.refusal == (
        "p has no param 'nn' (did you mean 'n'?); declared params: data, n, regenerate_outputs; "
        "param 'n': 1152921504606846976 is out of range: integers must be within "
        "-9007199254740991..9007199254740991 (what JSON, the Airflow UI and the step carry exactly). "
        "Nothing was triggered: fix the conf and trigger again")


def test_check_lets_a_run_through_when_the_workspace_cannot_be_read(monkeypatch, tmp_path, caplog):
    _connection(monkeypatch, (tmp_path / "not-mounted").as_uri())
    verdict = _check(monkeypatch, {"conf": {"data": "income_raw:2"}})
    assert verdict.refusal is None
    assert verdict.note.startswith("datasets not checked: workspace file://") and "is not a folder" in verdict.note
    assert "trigger of p let through, datasets not checked" in caplog.text


def test_check_gives_up_on_a_workspace_that_does_not_answer(monkeypatch):
    import socket

    silent = socket.socket()  # accepts connections, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        _connection(monkeypatch, "s3://bucket/ws", endpoint_url=f"http://127.0.0.1:{silent.getsockname()[1]}",
                    region_name="us-east-1")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        monkeypatch.setenv("MLPIPE_TRIGGER_CHECK_TIMEOUT", "1")
        verdict = _check(monkeypatch, {"dag_id": "p", "dag_run_conf": {"data": "income_raw"}}, dag_id=None)
    finally:
        silent.close()
    assert verdict == Verdict(note="datasets not checked: the workspace did not answer within 1s")


def test_check_leaves_other_dags_and_other_bodies_to_airflow(monkeypatch):
    assert _check(monkeypatch, {"conf": {"x": 1}}, dag_id="not_mlpipe") == Verdict()
    assert _check(monkeypatch, {"conf": ["not", "a", "mapping"]}) == Verdict()
    assert _check(monkeypatch, {"dag_run_conf": {"x": 1}}, dag_id=None) == Verdict()  # a backfill without dag_id


def test_check_reads_the_registry_for_the_defaults_too(monkeypatch, tmp_path):
    """No conf: the run uses the defaults, and a default naming no registered dataset is refused too."""
    from airflow_mlpipe.workspace.core import Workspace

    ws_dir = tmp_path / "ws"
    Workspace.from_uri(ws_dir.as_uri())  # an empty workspace
    ws_dir.mkdir()
    _connection(monkeypatch, ws_dir.as_uri())
    verdict = _check(monkeypatch, {"conf": None})
    assert verdict.refusal.startswith("param 'data': dataset 'income_raw' is not registered in file://")
