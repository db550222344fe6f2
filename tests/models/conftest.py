"""Fixtures of the model-lifecycle suite: a temporary DAGs folder holding a copy of dags_examples (the
income pipelines), a seeded workspace, and a helper running a pipeline with dag.test()."""

from __future__ import annotations

import json
import pathlib
import shutil
import sys

import pytest

from tests.conftest import use_dags_folder

REPO = pathlib.Path(__file__).resolve().parents[2]
#: one XCom shape for every step type (``operators.steprun.StepResult``; docs/internals.md "Step XCom")
XCOM_KEYS = {"step", "reused", "cache_key", "reused_from", "outputs", "metrics", "registered", "model", "decision"}
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture
def income_env(tmp_path, monkeypatch, airflow_db):
    """(dags folder, workspace uri): dags_examples copied to tmp, the workspace seeded with small data."""
    import seed_income

    dags = tmp_path / "dags"
    shutil.copytree(REPO / "dags_examples", dags)
    workspace = (tmp_path / "ws").as_uri()
    seed_income.seed(workspace, us_rows=3000, non_us_rows=3000, score_rows=2000)
    use_dags_folder(monkeypatch, dags)
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT",
                       json.dumps({"conn_type": "mlpipe", "extra": {"workspace": workspace}}))
    return dags, workspace


def run_pipeline(dags: pathlib.Path, definition: str, conf: dict | None = None):
    """dag.test() of one definition; returns (dag run, {task_id or task_id[i]: xcom})."""
    from airflow_mlpipe.factory import load_dag

    dag = load_dag(dags / "x.py", f"pipelines/{definition}")
    run = dag.test(run_conf=conf or {})
    values = {}
    for ti in run.get_task_instances():
        name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        values[name] = (ti.state, ti.xcom_pull(task_ids=ti.task_id, map_indexes=ti.map_index))
    return run, values
