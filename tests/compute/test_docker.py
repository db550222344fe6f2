"""The ``docker`` compute target against a real Docker Engine API (podman here, see
shared/ENVIRONMENT.md), in ``localhost/mlpipe-python:bookworm``: python3 only, no airflow_mlpipe."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_mlpipe.compute import StepTimedOut, get_target
from airflow_mlpipe.errors import ComputeError
from airflow_mlpipe.workspace.manifest import read_manifest
from tests.conftest import scaled

from .conftest import STEP_IMAGE, prep_request, script_request

pytestmark = pytest.mark.integration


def _target(docker_url, **extra):
    return get_target("docker", {"docker_url": docker_url, "kill_grace": 2, **extra})


def test_same_step_same_manifest_digest_as_local(docker_url, local_config, workspace, src_dir, tmp_path):
    lines: list[str] = []
    request = prep_request(workspace, src_dir, image=STEP_IMAGE, resources={"cpu": 1, "memory": "256Mi"})
    assert _target(docker_url).run(request, lines.append) == 0, lines
    in_container = read_manifest(workspace, "outputs/p/r1/prep/table")
    assert any("wrote 400 rows" in line for line in lines)

    from airflow_mlpipe.workspace.datastore import LocalDatastore

    other = LocalDatastore(str(tmp_path / "ws-local"))
    assert get_target("local", local_config).run(prep_request(other, src_dir), lambda line: None) == 0
    assert read_manifest(other, "outputs/p/r1/prep/table")["digest"] == in_container["digest"]
    result = workspace.get_json(request.context["result_key"])
    assert result["status"] == "succeeded" and result["python"].startswith("3.")


def test_container_logs_stream_and_exit_code_is_returned(docker_url, workspace, src_dir):
    body = "import sys, time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('oops', file=sys.stderr)\nsys.exit(4)\n"
    arrivals: dict[str, float] = {}
    t0 = time.monotonic()
    code = _target(docker_url).run(script_request(workspace, src_dir, "slow.py", body, image=STEP_IMAGE),
                                   lambda line: arrivals.setdefault(line, time.monotonic() - t0))
    end = time.monotonic() - t0
    assert code == 4
    assert arrivals["first"] < end - 1.0 and "oops" in arrivals
    assert workspace.get_json("runs/p/r1/steps/slow/attempt-1/result.json")["exit_code"] == 4


def test_kill_stops_the_container(docker_url, workspace, src_dir):
    import docker

    body = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    target = _target(docker_url)
    started = threading.Event()
    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(code=target.run(
        script_request(workspace, src_dir, "sleepy.py", body, image=STEP_IMAGE),
        lambda line: started.set() if line == "ready" else None)))
    runner.start()
    assert started.wait(30)
    t0 = time.monotonic()
    target.kill()
    target.kill()
    runner.join(scaled(30))
    assert not runner.is_alive() and box["code"] in (137, 143)
    assert time.monotonic() - t0 < scaled(10)
    client = docker.DockerClient(base_url=docker_url)
    assert not client.containers.list(all=True, filters={"label": "mlpipe.step=sleepy"})
    client.close()


def test_timeout_raises(docker_url, workspace, src_dir):
    with pytest.raises(StepTimedOut):
        _target(docker_url).run(script_request(workspace, src_dir, "t.py", "import time\ntime.sleep(30)\n",
                                               image=STEP_IMAGE, timeout=2), lambda line: None)


def test_missing_image_is_a_compute_error(docker_url, workspace, src_dir):
    with pytest.raises(ComputeError, match="not present"):
        _target(docker_url, pull="never").run(prep_request(workspace, src_dir, image="localhost/nope:none"), lambda line: None)


def test_s3_workspace_from_a_container(docker_url, local_config, workspace, src_dir, tmp_path, moto_env,
                                       moto_s3_options, s3_workspace_uri):
    """S3 workspace (moto on the worker's loopback, ``network_mode: host``). The step image has no boto3:
    the S3 datastore needs it, so this test mounts a copy of the pure-Python boto3 stack on PYTHONPATH
    (a real S3 step image would install boto3)."""
    import pathlib
    import shutil

    import boto3

    from airflow_mlpipe.workspace.datastore import open_datastore

    site = pathlib.Path(boto3.__file__).resolve().parents[1]
    deps = tmp_path / "deps"
    for name in ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3"):
        shutil.copytree(site / name, deps / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(site / "six.py", deps / "six.py")

    request = prep_request(workspace, src_dir, image=STEP_IMAGE)
    request.context["workspace"] = s3_workspace_uri
    request.env = {k: moto_env[k] for k in ("MLPIPE_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    request.env["PYTHONPATH"] = "/opt/mlpipe-deps"
    lines: list[str] = []
    target = _target(docker_url, network_mode="host", mounts=[f"{deps}:/opt/mlpipe-deps:ro"])
    assert target.run(request, lines.append) == 0, lines
    s3 = open_datastore(s3_workspace_uri, **moto_s3_options)
    assert get_target("local", local_config).run(prep_request(workspace, src_dir), lambda line: None) == 0
    assert read_manifest(s3, "outputs/p/r1/prep/table")["digest"] == read_manifest(workspace, "outputs/p/r1/prep/table")["digest"]
    assert s3.get_json(request.context["result_key"])["status"] == "succeeded"
