"""Fixtures of the compute suite: a local workspace, the quickstart sources, a venv cache per session,
and the Docker Engine (podman) endpoint for the ``integration`` docker tests."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from airflow_mlpipe.compute.base import StepRequest
from airflow_mlpipe.workspace.datastore import LocalDatastore
from tests.runtime.conftest import make_context

STEP_IMAGE = os.environ.get("MLPIPE_STEP_IMAGE", "localhost/mlpipe-python:bookworm")
DEFAULT_SOCKET = "unix:///run/mlpipe-podman.sock"
QUICKSTART = pathlib.Path(__file__).resolve().parents[2] / "dags_examples" / "src" / "quickstart"


@pytest.fixture(scope="session")
def venv_dir(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture(scope="session")
def local_config(venv_dir, tmp_path_factory) -> dict:
    return {
        "venv_dir": str(venv_dir),
        "runtime_dir": str(tmp_path_factory.mktemp("runtime")),
        "scratch_dir": str(tmp_path_factory.mktemp("scratch")),
        "kill_grace": 2,
    }


@pytest.fixture
def workspace(tmp_path) -> LocalDatastore:
    return LocalDatastore(str(tmp_path / "ws"))


@pytest.fixture
def src_dir(tmp_path) -> pathlib.Path:
    src = tmp_path / "src"
    shutil.copytree(QUICKSTART, src)
    return src


def prep_request(workspace, src_dir, rows: int = 400, **kwargs) -> StepRequest:
    ctx = make_context(
        workspace.uri, "prep.py",
        [["--rows"], [str(rows)], ["--seed"], ["7"], ["--out"], [{"output": "table"}]],
        outputs={"table": "outputs/p/r1/prep/table"},
    )
    kwargs.setdefault("python", "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3")
    return StepRequest(context=ctx, workdir=str(src_dir), **kwargs)


def script_request(workspace, src_dir, script: str, body: str, **kwargs) -> StepRequest:
    (src_dir / script).write_text(body)
    ctx = make_context(workspace.uri, script, [], step=script.split(".")[0])
    kwargs.setdefault("python", "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3")
    return StepRequest(context=ctx, workdir=str(src_dir), **kwargs)


@pytest.fixture(scope="session")
def docker_url() -> str:
    """The Docker Engine endpoint (podman here). Skipped only with MLPIPE_SKIP_DOCKER=1; an endpoint that
    does not answer is a failure, not a skip (CI runs scripts/setup_podman.sh first)."""
    if os.environ.get("MLPIPE_SKIP_DOCKER") == "1":
        pytest.skip("MLPIPE_SKIP_DOCKER=1")
    import docker

    url = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    try:
        client = docker.DockerClient(base_url=url, timeout=10)
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"no Docker Engine answers at {url} ({exc}). Run `sudo scripts/setup_podman.sh` (and "
            "scripts/build_step_image.sh), export the DOCKER_HOST it prints, or set MLPIPE_SKIP_DOCKER=1."
        )
    try:
        client.images.get(STEP_IMAGE)
    except Exception as exc:
        pytest.fail(f"image {STEP_IMAGE} is missing ({exc}); run `sudo scripts/build_step_image.sh`")
    finally:
        client.close()
    return url


__all__ = ["make_context", "prep_request", "script_request"]
