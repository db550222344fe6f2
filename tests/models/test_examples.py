"""The example DAGs folder loads whole (YAML pipelines, the endpoint, the hand-written DAG, maintenance),
and the hand-written and maintenance DAGs run under dag.test()."""

from __future__ import annotations

import os
import time

import pytest

from airflow_mlpipe.workspace.core import Workspace
from tests.conftest import REPO

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


def _number_params(definition: str) -> dict:
    from airflow_mlpipe.spec import load_pipeline

    spec = load_pipeline(REPO / "dags_examples" / "pipelines" / definition)
    return {name: p for name, p in spec.params.items() if p.type in ("integer", "number")}


@pytest.mark.parametrize("definition", sorted(p.name for p in (REPO / "dags_examples" / "pipelines").glob("*.yaml")))
def test_every_number_param_of_the_examples_is_bounded(definition):
    """A param without bounds lets a user pick a value the script was never run with (a huge l2...)."""
    for name, param in _number_params(definition).items():
        low = param.minimum if param.minimum is not None else param.exclusive_minimum
        high = param.maximum if param.maximum is not None else param.exclusive_maximum
        assert low is not None and high is not None, f"{definition}: param {name!r} needs a minimum and a maximum"


@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_the_retraining_example_survives_the_extreme_values_its_params_allow(income_env):
    """The largest learning rate, epochs and l2 together (the old explicit L2 step diverged to NaN weights
    and evaluate's AUC loop never ended on NaN scores), then the smallest ones."""
    import math

    from tests.models.conftest import run_pipeline

    dags, _ = income_env
    params = _number_params("income_retrain.yaml")
    highest = {name: p.maximum for name, p in params.items()}
    lowest = {name: p.minimum if p.minimum is not None else p.exclusive_minimum + 1e-9 for name, p in params.items()}
    assert highest == {"learning_rate": 5, "epochs": 500, "l2": 10}
    for conf in (highest, lowest):
        run, xcoms = run_pipeline(dags, "income_retrain.yaml", conf)
        assert run.state == "success", (conf, {k: v[0] for k, v in xcoms.items()})
        metrics = xcoms["evaluate"][1]["metrics"]
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        assert 0 <= metrics["auc"] <= 1 and 0 <= metrics["accuracy"] <= 1
