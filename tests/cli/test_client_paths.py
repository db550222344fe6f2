"""The REST client puts every id into its URL as one escaped path segment: checked on the raw request line
received by a real HTTP server on loopback."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from airflow_mlpipe.client import AirflowClient, api_path


class _Recorder(http.server.BaseHTTPRequestHandler):
    paths: list[str] = []

    def _answer(self) -> None:
        type(self).paths.append(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"access_token": "t", "dag_run_id": "r", "state": "success", "dag_runs": [],
                           "task_instances": [], "value": 1}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _Recorder.paths = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Recorder.paths
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_ids_are_escaped_path_segments(server):
    url, paths = server
    odd = "run 1?x=#frag%20/y"
    with AirflowClient(url, token="t") as client:
        client.get_run("my.dag", "manual__2026-01-01T00:00:00+00:00")
        client.get_run("my.dag", odd)
        client.trigger("my.dag", {"a": 1})
        client.xcom("my.dag", odd, "train", key="return value")
        client.task_log_events("my.dag", odd, "train", 2)
    assert paths == [
        "/api/v2/dags/my.dag/dagRuns/manual__2026-01-01T00%3A00%3A00%2B00%3A00",
        "/api/v2/dags/my.dag/dagRuns/run%201%3Fx%3D%23frag%2520%2Fy",
        "/api/v2/dags/my.dag/dagRuns",
        "/api/v2/dags/my.dag/dagRuns/run%201%3Fx%3D%23frag%2520%2Fy/taskInstances/train/xcomEntries/return%20value"
        "?map_index=-1&deserialize=true",
        "/api/v2/dags/my.dag/dagRuns/run%201%3Fx%3D%23frag%2520%2Fy/taskInstances/train/logs/2"
        "?map_index=-1&full_content=true",
    ]


def test_api_path():
    assert api_path("dags", "a/b", "dagRuns") == "/dags/a%2Fb/dagRuns"
