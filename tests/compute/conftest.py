"""Fixtures of the compute suite: a local workspace, the quickstart sources, a venv cache per session.
The Docker Engine endpoint (``docker_url``) comes from ``tests/fixtures/docker.py``."""

from __future__ import annotations

import os
import pathlib
import shutil

import pytest

from airflow_mlpipe.compute.base import StepRequest
from airflow_mlpipe.workspace.datastore import LocalDatastore
from tests.fixtures.docker import STEP_IMAGE
from tests.runtime.conftest import make_context

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


__all__ = ["STEP_IMAGE", "make_context", "prep_request", "script_request"]
