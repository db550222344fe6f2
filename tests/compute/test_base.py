"""Compute-target plumbing without any engine: registry, StepRequest, quantities, line splitting,
and the docker container spec (built without contacting the Engine)."""

from __future__ import annotations

import pytest

from airflow_mlpipe.compute import ComputeTarget, StepRequest, get_target, register_target, target_types
from airflow_mlpipe.compute.base import LineSplitter, exit_code_from_returncode, parse_cpu, parse_memory
from airflow_mlpipe.compute.docker import DockerTarget, workspace_local_root

from .conftest import STEP_IMAGE, make_context, prep_request


def test_registry_knows_the_three_targets_and_is_lazy():
    import subprocess
    import sys

    assert target_types() == ["docker", "kubernetes", "local"]
    assert get_target("docker", {"docker_url": "unix:///nowhere"}).config["docker_url"] == "unix:///nowhere"
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, airflow_mlpipe.compute as c; c.get_target('kubernetes', {}); "
         "c.get_target('docker', {}); print(sorted(m for m in ('docker', 'kubernetes', 'airflow') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"  # clients (and Airflow) load only when a step runs
    with pytest.raises(ValueError, match="unknown compute type 'slurm'; known types: docker, kubernetes, local"):
        get_target("slurm", {})


def test_register_a_custom_target():
    class Echo(ComputeTarget):
        def run(self, request, on_log):
            on_log(request.step)
            return 0

        def kill(self):
            self._kill_requested.set()

    register_target("echo", Echo)
    lines: list[str] = []
    assert get_target("echo", {}).run(StepRequest(context={"step": "s1"}), lines.append) == 0 and lines == ["s1"]
    with pytest.raises(TypeError):
        register_target("bad", object)  # type: ignore[arg-type]


def test_step_request_defaults_validation_and_repr_hides_secrets():
    ctx = make_context("file:///ws", "a.py", [], step="train", run_id="manual__1", attempt=3)
    req = StepRequest(context=ctx, env={"AWS_SECRET_ACCESS_KEY": "s3cr3t", "N": 1})
    assert (req.pipeline, req.run_id, req.step, req.attempt) == ("p", "manual__1", "train", 3)
    assert req.env["N"] == "1"
    assert "s3cr3t" not in repr(req) and "AWS_SECRET_ACCESS_KEY" in repr(req)
    with pytest.raises(ValueError, match="unknown resource"):
        StepRequest(context=ctx, resources={"tpu": 1})
    with pytest.raises(ValueError, match="timeout"):
        StepRequest(context=ctx, timeout=0)
    with pytest.raises(TypeError):
        StepRequest(context="{}")  # type: ignore[arg-type]


@pytest.mark.parametrize("value, expected", [
    (1024, 1024), ("512Mi", 512 * 1024**2), ("2G", 2 * 10**9), ("1.5Gi", int(1.5 * 1024**3)), ("800m", 800 * 10**6),
])
def test_parse_memory(value, expected):
    assert parse_memory(value) == expected


@pytest.mark.parametrize("bad", ["lots", "12Qi", True, "-1G"])
def test_parse_memory_rejects(bad):
    with pytest.raises(ValueError):
        parse_memory(bad)


def test_parse_cpu():
    assert parse_cpu(2) == 2.0 and parse_cpu("500m") == 0.5 and parse_cpu("1.5") == 1.5
    for bad in ("x", 0, "-1", False):
        with pytest.raises(ValueError):
            parse_cpu(bad)


def test_line_splitter_handles_partial_chunks_crlf_and_bad_utf8():
    lines: list[str] = []
    splitter = LineSplitter(lines.append, max_line=10)
    for chunk in (b"hel", b"lo\r\nwor", b"ld\n\xff\n", b"0123456789ABC", b"tail"):
        splitter.feed(chunk)
    splitter.close()
    assert lines == ["hello", "world", "\ufffd", "0123456789ABC", "tail"]


def test_exit_code_from_returncode():
    assert exit_code_from_returncode(-9) == 137 and exit_code_from_returncode(3) == 3


def test_workspace_local_root():
    assert workspace_local_root("s3://b/p") is None
    assert workspace_local_root("file:///tmp/a%20b") == "/tmp/a b"


def test_container_spec_mounts_the_local_workspace(workspace, src_dir):
    spec = DockerTarget({"network_mode": "host"}).container_spec(
        prep_request(workspace, src_dir, image=STEP_IMAGE, resources={"cpu": "500m", "memory": "1Gi", "gpu": 1}))
    root = workspace_local_root(workspace.uri)
    assert {(m["Source"], m["Target"]) for m in spec["mounts"]} == {(root, root), (str(src_dir), str(src_dir))}
    assert spec["nano_cpus"] == 500_000_000 and spec["mem_limit"] == 1024**3
    assert spec["device_requests"][0]["Count"] == 1 and spec["network_mode"] == "host"
    assert spec["command"][:3] == ["python3", "-u", "-c"]
    assert "MLPIPE_RUNTIME_ZIP_B64" in spec["environment"] and "MLPIPE_CONTEXT" in spec["environment"]
