"""Killing the task process kills the step (DESIGN.md section 5): a step whose task process died must not
run on, publish a manifest or leave its scratch folder. The task runs in a process of its own (``dag.test()``
in a fresh Python, as a worker's task process) and is SIGKILLed while its step runs; the step, what the step
started, its scratch folder (local) and its container (docker, through podman's Docker Engine API) must go."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, scaled
from tests.fixtures.docker import STEP_IMAGE
from tests.operators.kit import activate, local_target, make_dags_folder

PIPELINE = """
pipeline: doomed
start_date: 2026-01-01
schedule: null
defaults: {compute: COMPUTE, environment: plain, retries: 0}
compute:
  local: {type: local}
  podman: {type: docker, docker_url: "DOCKER_URL", mounts: ["SIGNALS:SIGNALS"]}
environments:
  plain: {python: python3, image: IMAGE}
steps:
  long:
    script: long.py
    source_directory: ../src
    arguments: [--out, "${outputs.model}", --signals, SIGNALS]
    outputs: {model: {}}
"""

SCRIPT = """
import argparse, os, pathlib, subprocess, time
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path)
parser.add_argument("--signals", type=pathlib.Path)
args = parser.parse_args()
child = subprocess.Popen(["sleep", "600"])
(args.signals / "pids").write_text(f"{os.getpid()} {child.pid}")
deadline = time.monotonic() + 300
while not (args.signals / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
(args.out / "model.txt").write_text("trained by a step whose task was gone")
"""

TASK = """
import pathlib, sys
from tests.operators.kit import load, run
run(load(pathlib.Path(sys.argv[1]), "doomed"))
"""


def _wait(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return not fh.read().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.integration  # kills a real Airflow task process tree and watches its step stop (~10 s each)
@pytest.mark.parametrize("compute", ["local", "podman"])
def test_the_step_dies_with_its_task(airflow_db, tmp_path, monkeypatch, request, compute):
    docker_url = request.getfixturevalue("docker_url") if compute == "podman" else "unused"
    signals = tmp_path / "signals"
    signals.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("MLPIPE_SCRATCH_DIR", str(scratch))
    text = (PIPELINE.replace("COMPUTE", compute).replace("DOCKER_URL", docker_url)
            .replace("SIGNALS", str(signals)).replace("IMAGE", STEP_IMAGE))
    dags = make_dags_folder(tmp_path / "dags", {"doomed": text}, {"src/long.py": SCRIPT})
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, dags, target)

    task = subprocess.Popen([sys.executable, "-c", TASK, str(dags)], cwd=REPO, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: (signals / "pids").exists() or task.poll() is not None, scaled(240), "the step to start")
        assert task.poll() is None, "the task ended before its step started"
        task.send_signal(signal.SIGKILL)  # the OOM killer, a worker shut down hard...
        task.wait()
    finally:
        if task.poll() is None:
            task.kill()

    if compute == "local":
        step_pid, child_pid = (int(p) for p in (signals / "pids").read_text().split())
        _wait(lambda: not _running(step_pid), scaled(30), f"step process {step_pid} to die")
        _wait(lambda: not _running(child_pid), scaled(30), f"the step's child {child_pid} to die")
        _wait(lambda: not any(scratch.iterdir()), scaled(30), "the scratch folder to be removed")
    else:
        import docker

        client = docker.DockerClient(base_url=docker_url)
        try:
            # the low-level list: containers.list() inspects each container and races with the removal
            _wait(lambda: not client.api.containers(all=True, filters={"label": "mlpipe.pipeline=doomed"}),
                  scaled(60), "the step's container to be removed")
        finally:
            client.close()
    (signals / "go").write_text("1")  # a step still alive would now finish and publish
    ws = target.open()
    published = [o.key for o in ws.datastore.list("outputs") if o.key.endswith("_manifest.json")]
    assert published == []
    results = [o.key for o in ws.datastore.list("runs") if o.key.endswith("result.json")]
    assert all(ws.datastore.get_json(k).get("status") != "succeeded" for k in results)
