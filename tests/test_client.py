"""The REST client holds up when Airflow is slow: idempotent calls are retried on timeouts, dropped
connections and 5xx answers (SQLite's "database is locked" included) with backoff and an overall deadline;
a trigger is retried only with a dag_run_id, and a 409 for that id on a retry means the first POST landed.

Against a real HTTP server on loopback (stdlib ``http.server`` in a thread) that misbehaves on the first
calls of a route as each test scripts it: answer 503 or 500, sleep past the client's read timeout, or close
the connection without answering (after doing the work, for the trigger).
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
import urllib.parse
from collections import defaultdict

import pytest

from airflow_mlpipe.client import AirflowApiError, AirflowClient
from tests.conftest import scaled

LOCKED = {"detail": "(sqlite3.OperationalError) database is locked"}


class FakeAirflow(http.server.ThreadingHTTPServer):
    """A tiny Airflow REST API: login, trigger, get a run. ``faults[route]`` lists what the next calls of
    ``route`` do ("503", "500", "slow", "close", "close-after"), one entry per call, then they behave."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a slow answer to a client that gave up
        pass

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.faults: dict[str, list[str]] = defaultdict(list)
        self.calls: dict[str, int] = defaultdict(int)
        self.runs: dict[str, dict] = {}
        self.slow_seconds = 1.5
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: FakeAirflow
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def _route(self) -> str:
        path = self.path.split("?")[0]
        if path == "/auth/token":
            return "token"
        if re.fullmatch(r"/api/v2/dags/[^/]+/dagRuns", path):
            return "trigger" if self.command == "POST" else "list"
        if re.fullmatch(r"/api/v2/dags/[^/]+/dagRuns/[^/]+", path):
            return "get_run"
        if path == "/api/v2/assets/events":
            return "event"
        return "other"

    def _answer(self, status: int, doc: object) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True  # closed without a byte of answer once the handler returns

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        route = self._route()
        with self.server.lock:
            self.server.calls[route] += 1
            faults = self.server.faults[route]
            fault = faults.pop(0) if faults else None
        if fault == "503":
            return self._answer(503, {"detail": "Service Unavailable"})
        if fault == "500":
            return self._answer(500, LOCKED)
        if fault == "slow":
            time.sleep(self.server.slow_seconds)
        if fault == "close":
            return self._drop()
        if route == "token":
            return self._answer(201, {"access_token": "jwt"})
        if self.headers.get("Authorization") != "Bearer jwt":
            return self._answer(401, {"detail": "Not authenticated"})
        if route == "trigger":
            run_id = body.get("dag_run_id") or f"manual__{len(self.server.runs)}"
            if run_id in self.server.runs:
                return self._answer(409, {"detail": f"DAG Run with id {run_id} already exists"})
            run = {"dag_run_id": run_id, "state": "queued", "conf": body.get("conf")}
            self.server.runs[run_id] = run
            if fault == "close-after":  # the work is done, the answer is lost
                return self._drop()
            return self._answer(200, run)
        if route == "get_run":
            run_id = urllib.parse.unquote(self.path.split("?")[0].rsplit("/", 1)[1])  # as Airflow decodes it
            if run_id not in self.server.runs:
                return self._answer(404, {"detail": "not found"})
            return self._answer(200, self.server.runs[run_id])
        if route == "event":
            return self._answer(200, {"id": 1})
        return self._answer(404, {"detail": "no such route"})

    do_GET = do_POST = do_PATCH = _handle


@pytest.fixture
def fake():
    server = FakeAirflow()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def make_client(fake: FakeAirflow, **kwargs) -> AirflowClient:
    kwargs = {"timeout": 0.5, "retry_deadline": 20, "backoff": 0.05, **kwargs}
    return AirflowClient(fake.url, username="admin", password="pw", **kwargs)


def test_idempotent_calls_survive_503_locked_database_dropped_and_slow_replies(fake):
    fake.runs["r1"] = {"dag_run_id": "r1", "state": "running", "conf": {}}
    fake.faults["token"] = ["503", "close"]
    fake.faults["get_run"] = ["503", "500", "close", "slow"]
    with make_client(fake) as client:
        assert client.get_run("d", "r1")["state"] == "running"
    assert fake.calls["token"] == 3
    assert fake.calls["get_run"] == 5


def test_a_trigger_with_a_run_id_is_retried_and_a_409_for_it_means_it_landed(fake):
    fake.faults["trigger"] = ["503", "close-after"]
    with make_client(fake) as client:
        run = client.trigger("d", {"epochs": 3}, run_id="manual__fixed")
    assert run["dag_run_id"] == "manual__fixed" and run["conf"] == {"epochs": 3}
    assert fake.calls["trigger"] == 3  # 503, then done but unanswered, then 409 -> read back
    assert list(fake.runs) == ["manual__fixed"]  # exactly one run


def test_trigger_names_its_run_so_it_can_be_retried(fake):
    fake.faults["trigger"] = ["close-after"]
    with make_client(fake) as client:
        run = client.trigger("d", {"epochs": 3})
    assert run["dag_run_id"].startswith("manual__")
    assert len(fake.runs) == 1


def test_a_409_on_the_first_attempt_is_a_real_conflict(fake):
    fake.runs["taken"] = {"dag_run_id": "taken", "state": "success", "conf": {}}
    with make_client(fake) as client, pytest.raises(AirflowApiError) as refused:
        client.trigger("d", {}, run_id="taken")
    assert refused.value.status == 409 and fake.calls["trigger"] == 1


def test_non_idempotent_calls_and_client_errors_are_not_retried(fake):
    fake.faults["event"] = ["503"]
    with make_client(fake) as client:
        with pytest.raises(AirflowApiError) as failed:
            client.create_asset_event(7, {})
        assert failed.value.status == 503 and fake.calls["event"] == 1
        with pytest.raises(AirflowApiError) as missing:
            client.get_run("d", "nope")
        assert missing.value.status == 404 and fake.calls["get_run"] == 1


def test_retries_stop_at_the_deadline_with_a_clear_message(fake):
    fake.faults["get_run"] = ["503"] * 1000
    fake.runs["r1"] = {"dag_run_id": "r1", "state": "running", "conf": {}}
    with make_client(fake, retry_deadline=1.5, backoff=0.1) as client:
        started = time.monotonic()
        with pytest.raises(AirflowApiError) as failed:
            client.get_run("d", "r1")
        elapsed = time.monotonic() - started
    assert failed.value.status == 503
    # it gives up when the next backoff would cross the deadline (1.5 s): not before half of it, not long after
    assert 0.5 <= elapsed < 1.5 + scaled(5), elapsed
    assert 2 <= fake.calls["get_run"] < 30
    assert "attempts" in str(failed.value) and "503" in str(failed.value)
