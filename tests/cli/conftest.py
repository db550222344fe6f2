"""Fixtures of the CLI tests: a local workspace with registered datasets, a model and run records written
the way the step operator writes them (operators/step.py)."""

from __future__ import annotations

import os
import pathlib
import time

import pytest
from typer.testing import CliRunner

from airflow_mlpipe.workspace.core import Workspace


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No workspace or Airflow from the developer's environment leaks into a test."""
    for var in ("MLPIPE_WORKSPACE", "MLPIPE_AIRFLOW_URL", "MLPIPE_AIRFLOW_TOKEN", "MLPIPE_AIRFLOW_USERNAME",
                "MLPIPE_AIRFLOW_PASSWORD", "AIRFLOW_CONN_MLPIPE_DEFAULT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables at 80 columns otherwise


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def ws_dir(tmp_path) -> pathlib.Path:
    return tmp_path / "ws"


@pytest.fixture
def ws(ws_dir) -> Workspace:
    ws_dir.mkdir(exist_ok=True)
    return Workspace.from_uri(ws_dir.as_uri())


def make_tree(root: pathlib.Path, files: dict[str, str | bytes]) -> pathlib.Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root


def write_output(ws: Workspace, tmp_path: pathlib.Path, pipeline: str, run_id: str, step: str, output: str,
                 files: dict[str, str]) -> dict:
    local = make_tree(tmp_path / f"out-{pipeline}-{step}-{output}-{abs(hash(run_id))}", files)
    prefix = ws.output_prefix(pipeline, run_id, step, output)
    manifest = ws.commit_output(local, prefix)
    return {"key": prefix, "uri": ws.datastore.uri_for(prefix), "digest": manifest["digest"],
            "size": manifest["size"], "files": len(manifest["files"])}


def record_run(ws: Workspace, tmp_path: pathlib.Path, pipeline: str, run_id: str, *, reused: bool = False,
               fail_train: bool = False, origin: str | None = None, started: float | None = None) -> None:
    """A two-step run (prep -> train) recorded like MlpipeStepOperator.execute does."""
    started = started if started is not None else time.time()
    params = {"rows": 500, "learning_rate": 0.5, "regenerate_outputs": False}
    ws.runs.write_run(pipeline, run_id, {"params": params, "conf": {"rows": 500}, "run_type": "manual",
                                         "logical_date": "", "dag_id": pipeline})
    git = {"commit": "0123456789abcdef0123", "branch": "main", "dirty": False}
    table = write_output(ws, tmp_path, pipeline, origin or run_id, "prep", "table", {"table.csv": "x,y\n1,2\n"})
    base = {"pipeline": pipeline, "run_id": run_id, "attempt": 1, "compute": "local",
            "snapshot": {"sha256": "ab" * 32, "git": git}, "components": {}}
    prep = {**base, "step": "prep", "cache_key": "c1" * 32, "inputs": {}, "started": started,
            "finished": started + 2.5, "status": "succeeded", "outputs": {"table": table},
            "metrics": {"rows": 500, "positive_rate": 0.4875}, "registered": {"quickstart_table": 1}}
    if reused:
        prep.update(reused=True, reused_from={"pipeline": pipeline, "run_id": origin, "step": "prep"})
    else:
        prep.update(reused=False, rerun_reasons=["no earlier run of this step"])
    ws.runs.write_step(pipeline, run_id, "prep", prep)
    train = {**base, "step": "train", "cache_key": "d2" * 32, "started": started + 3,
             "inputs": {"table": {"key": table["key"], "kind": "dir", "digest": table["digest"], "source": "prep.table"}},
             "reused": False, "rerun_reasons": ["params changed: learning_rate 0.1 -> 0.5"]}
    if fail_train:
        train.update(status="failed", finished=started + 4, error="step 'train' exited with code 1\nValueError: boom")
    else:
        model = write_output(ws, tmp_path, pipeline, run_id, "train", "model", {"model.json": '{"w": [1]}'})
        train.update(status="succeeded", finished=started + 7, outputs={"model": model},
                     metrics={"accuracy": 0.91234, "train_loss": 0.25})
    ws.runs.write_step(pipeline, run_id, "train", train)


def age(path: pathlib.Path, days: float) -> None:
    """Make every file below ``path`` look ``days`` old."""
    when = time.time() - days * 86400
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            os.utime(os.path.join(dirpath, name), (when, when))
