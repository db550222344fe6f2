"""scripts/standalone.py never starts a second Airflow on one home: two start attempts at once (two real
processes) end with ONE server, the second reusing it and saying so; a record whose process is gone (or
whose pid now names another process) does not count; ``stop`` stops the server and every process it
started, even one in a session of its own (as the local compute target starts steps).

The server here is a real process that behaves like ``airflow standalone`` seen from outside (a slow start
that logs as it goes, the admin password file, ``/api/v2/monitor/health`` on ``AIRFLOW__API__PORT``, a
child in its own session): starting a real Airflow twice would test the same lock at a minute per start.
tests/e2e/test_demo_home.py checks the reuse against the real standalone of the e2e session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO, scaled

sys.path.insert(0, str(REPO / "scripts"))
import standalone  # noqa: E402

SERVER = textwrap.dedent('''
    import http.server, json, os, pathlib, subprocess, sys, time

    home = pathlib.Path(sys.argv[1])
    with open(home / "starts.txt", "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    for i in range(6):  # a slow start that makes progress
        print(f"starting component {i}", flush=True)
        time.sleep(0.5)
    step = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    (home / "step.pid").write_text(str(step.pid))
    airflow_home = pathlib.Path(os.environ["AIRFLOW_HOME"])
    airflow_home.mkdir(parents=True, exist_ok=True)
    (airflow_home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps({"admin": "pw"}))

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/v2/monitor/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    print("API server ready", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(os.environ["AIRFLOW__API__PORT"])), Health).serve_forever()
''')

ATTEMPT = textwrap.dedent('''
    import json, pathlib, sys
    sys.path.insert(0, sys.argv[1])
    import standalone

    home = pathlib.Path(sys.argv[2])
    server = standalone.start(home, home / "dags", command=[sys.executable, sys.argv[3], str(home)],
                              on_wait=lambda text: print(text, file=sys.stderr, flush=True))
    print(json.dumps({"pid": server["pid"], "reused": server["reused"], "url": server["url"]}))
''')


def alive(pid: int) -> bool:
    return standalone.start_time(pid) is not None


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    (home / "dags").mkdir(parents=True)
    yield home
    standalone.stop(home, timeout=10)


@pytest.mark.integration  # two real start attempts of an Airflow process tree on one home
def test_two_start_attempts_on_one_home_start_one_airflow(home, tmp_path):
    server_script = tmp_path / "fake_airflow.py"
    server_script.write_text(SERVER)
    attempt = tmp_path / "attempt.py"
    attempt.write_text(ATTEMPT)
    argv = [sys.executable, str(attempt), str(REPO / "scripts"), str(home), str(server_script)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = [proc.communicate(timeout=scaled(60)) for proc in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]

    starts = (home / "starts.txt").read_text().split()
    assert len(starts) == 1, f"a second server was started: {starts}"
    assert {r["pid"] for r in results} == {int(starts[0])}
    assert sorted(r["reused"] for r in results) == [False, True]
    reuser = outputs[[r["reused"] for r in results].index(True)][1]
    assert f"Airflow is already running in {home} (pid {starts[0]}" in reuser
    # both said what they waited for while the server started
    assert any(f"waiting for the API server (pid {starts[0]}, " in err for _, err in outputs), outputs

    # a third attempt, once it answers: reused at once
    third = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(30))
    assert json.loads(third.stdout.strip().splitlines()[-1]) == {**results[0], "reused": True}
    assert len((home / "starts.txt").read_text().split()) == 1

    # stop: the server, and the process it started in its own session
    step = int((home / "step.pid").read_text())
    assert alive(step) and os.getpgid(step) != int(starts[0])
    assert standalone.stop(home)
    assert wait_gone([int(starts[0]), step], scaled(10)) == []
    assert standalone.recorded(home) is None and not standalone.stop(home)

    # a record of a server that is gone does not count: the next attempt starts a new one
    again = subprocess.run(argv, capture_output=True, text=True, timeout=scaled(60))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout.strip().splitlines()[-1])["reused"] is False
    assert len((home / "starts.txt").read_text().split()) == 2


def test_a_recycled_pid_is_not_the_recorded_server(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    me = os.getpid()  # a live process, but not the one recorded: it started at another time
    (home / standalone.INFO).write_text(json.dumps({"pid": me, "port": 1, "start_time": standalone.start_time(me) - 1,
                                                    "cmdline": standalone.cmdline(me)}))
    assert standalone.recorded(home) is None
    (home / standalone.INFO).write_text(json.dumps({"pid": me, "port": 1, "start_time": standalone.start_time(me)}))
    assert standalone.recorded(home)["pid"] == me


def test_a_port_held_by_another_program_is_refused(home, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} is in use by another program"):
            standalone.start(home, home / "dags", port=port, command=[sys.executable, "-c", "pass"])
    assert standalone.recorded(home) is None
