"""Fixtures of the runtime suite: the launcher runs as a real subprocess in a Python that has no
Airflow (the system python3), with only the staged runtime on PYTHONPATH, against a local workspace."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from airflow_mlpipe.runtime.bundle import launch_command, stage_runtime
from airflow_mlpipe.workspace.datastore import LocalDatastore
from tests.conftest import scaled

CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3", "/root/.pyenv/versions/3.11.7/bin/python")


def _has_airflow(python: str) -> bool:
    probe = subprocess.run([python, "-s", "-c", "import airflow"], env={"PATH": os.defpath}, capture_output=True)
    return probe.returncode == 0


@pytest.fixture(scope="session")
def plain_python() -> str:
    """An interpreter where ``import airflow`` fails (proves the runtime does not need Airflow)."""
    for candidate in CANDIDATES:
        if os.access(candidate, os.X_OK) and not _has_airflow(candidate):
            return candidate
    pytest.skip("no python3 without Airflow on this machine")


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory) -> pathlib.Path:
    return stage_runtime(tmp_path_factory.mktemp("runtime"))


@pytest.fixture
def workspace(tmp_path) -> LocalDatastore:
    return LocalDatastore(str(tmp_path / "ws"))


@pytest.fixture
def src_dir(tmp_path) -> pathlib.Path:
    src = tmp_path / "src"
    shutil.copytree(pathlib.Path(__file__).resolve().parents[2] / "dags_examples" / "src" / "quickstart", src)
    return src


def make_context(workspace_uri: str, script: str, argv: list, *, step: str = "prep", run_id: str = "r1",
                 inputs: dict | None = None, outputs: dict | None = None, params: dict | None = None,
                 snapshot: dict | None = None, attempt: int = 1, pipeline: str = "p") -> dict:
    return {
        "format": 1,
        "workspace": workspace_uri,
        "pipeline": pipeline,
        "run_id": run_id,
        "step": step,
        "attempt": attempt,
        "snapshot": snapshot,
        "script": script,
        "argv": argv,
        "params": params or {},
        "inputs": inputs or {},
        "outputs": {name: {"key": key} for name, key in (outputs or {}).items()},
        "result_key": f"runs/{pipeline}/{run_id}/steps/{step}/attempt-{attempt}/result.json",
        "kept_outputs_key": f"runs/{pipeline}/{run_id}/steps/{step}/attempt-{attempt}/outputs",
        "tags": {},
    }


def run_launcher(python: str, runtime_dir: pathlib.Path, context: dict, cwd: pathlib.Path,
                 extra_env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {"PATH": os.defpath, "PYTHONPATH": str(runtime_dir), "MLPIPE_CONTEXT": json.dumps(context)}
    env.update(extra_env or {})
    return subprocess.run(
        launch_command(python),
        cwd=cwd, env=env, capture_output=True, text=True, timeout=scaled(timeout),
    )


def result_of(workspace: LocalDatastore, context: dict) -> dict:
    return workspace.get_json(context["result_key"])


__all__ = ["make_context", "result_of", "run_launcher", "sys"]
