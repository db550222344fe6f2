"""The example DAGs folder loads whole (YAML pipelines, the endpoint, the hand-written DAG, maintenance),
and the hand-written and maintenance DAGs run under dag.test()."""

from __future__ import annotations

import os
import time

import pytest

from airflow_mlpipe.workspace.core import Workspace

EXPECTED = {
    "mlpipe_quickstart", "income_retrain_v1", "income_retrain_v2", "income_retrain", "income_batch_score",
    "income_handwritten", "mlpipe_maintenance",
}


def _bag(dags):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(dags), safe_mode=True)
    assert not bag.import_errors, bag.import_errors
    return bag


def test_the_examples_folder_loads_every_dag(income_env):
    dags, _ = income_env
    assert set(_bag(dags).dags) == EXPECTED


@pytest.mark.integration
def test_handwritten_dag_shares_workspace_and_cache_with_yaml_pipelines(income_env):
    dags, workspace = income_env
    dag = _bag(dags).dags["income_handwritten"]
    run = dag.test(run_conf={"epochs": 5})
    assert run.state == "success"
    ws = Workspace.from_uri(workspace)
    assert ws.models.get_alias("income_handwritten", "production") == 1
    steps = ws.runs.get_run("income_handwritten", run.run_id)["steps"]
    assert {"prep", "train", "evaluate", "register", "promote"} <= set(steps)
    rerun = _bag(dags).dags["income_handwritten"].test(run_conf={"epochs": 5})
    assert rerun.state == "success"
    assert all(r["reused"] for r in ws.runs.get_run("income_handwritten", rerun.run_id)["steps"].values())


@pytest.mark.integration
def test_maintenance_dag_collects_only_old_unreferenced_outputs(income_env):
    dags, workspace = income_env
    ws = Workspace.from_uri(workspace)
    ws.datastore.write_bytes("outputs/p/old-run/step/out/file.bin", b"x" * 1000)
    ws.datastore.put_json("outputs/p/old-run/step/out/_manifest.json", {"files": {}, "digest": "d"})
    old = time.time() - 90 * 86400
    root = ws.datastore.local_path("outputs/p/old-run")
    for path in [root, *root.rglob("*")]:
        os.utime(path, (old, old))
    bag = _bag(dags)
    dry = bag.dags["mlpipe_maintenance"].test(run_conf={"older_than_days": 30})
    assert dry.state == "success"
    assert ws.datastore.exists("outputs/p/old-run/step/out/file.bin"), "a dry run deletes nothing"
    real = _bag(dags).dags["mlpipe_maintenance"].test(run_conf={"older_than_days": 30, "dry_run": False})
    assert real.state == "success"
    assert not ws.datastore.exists("outputs/p/old-run/step/out/file.bin")
    assert ws.datasets.get("income_raw", 1)  # registered data is never collected
