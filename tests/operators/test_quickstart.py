"""The quickstart example run by Airflow: through ``dag.test()`` (metrics, manifests, dataset
registration and Asset events) and through the real ``airflow dags test`` CLI (a conf value reaches the
step; a conf of the wrong type or with an unknown key is refused before any step runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import scaled
from tests.operators.kit import EXAMPLES, activate, load, local_target, make_dags_folder, run

QUICKSTART = (EXAMPLES / "pipelines" / "quickstart.yaml").read_text()


@pytest.fixture
def quickstart_dags(tmp_path):
    return make_dags_folder(tmp_path / "dags", {"quickstart": QUICKSTART}, copy_quickstart_sources=True)


def asset_events(run_id: str) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run_id)).all()
        return [(e.asset.uri, e.source_task_id, dict(e.extra or {})) for e in events]


def test_metrics_manifests_and_registered_dataset(airflow_db, quickstart_dags, tmp_path, monkeypatch):
    """Metrics logged by the scripts are in XCom and in the run record; every output has a manifest whose
    files are really there; ``register_as`` makes dataset version 1 and one Asset event for it, and an
    identical (reused) run registers nothing new and emits no event."""
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, quickstart_dags, target)
    ws = target.open()
    result = run(load(quickstart_dags, "quickstart"), {"rows": 300, "epochs": 5})
    assert result.state == "success", result.states
    prep, train = result.xcoms["prep"], result.xcoms["train"]
    assert prep["reused"] is False and train["reused"] is False
    assert prep["metrics"]["rows"] == 300 and 0 < prep["metrics"]["positive_rate"] < 1
    assert 0.5 < train["metrics"]["accuracy"] <= 1 and "train_loss" in train["metrics"]

    record = ws.runs.get_run("mlpipe_quickstart", result.run_id)
    assert record["params"]["rows"] == 300 and record["params"]["epochs"] == 5
    assert record["steps"]["prep"]["metrics"] == prep["metrics"]
    assert record["steps"]["train"]["metrics"] == train["metrics"]
    assert [p["step"] for p in record["steps"]["train"]["metric_series"]["train_loss"]] == [0, 4]

    for step, output, files in (("prep", "table", {"table.csv"}), ("train", "model", {"model.json"})):
        out = result.xcoms[step]["outputs"][output]
        manifest = ws.read_manifest(out["key"])
        assert manifest is not None and manifest["digest"] == out["digest"]
        assert set(manifest["files"]) == files
        assert ws.verify_output(out["key"], out["digest"])
        listed = {o.key[len(out["key"]) + 1:] for o in ws.datastore.list(out["key"] + "/")}
        assert listed == files | {"_manifest.json", "_digest.json"}  # the content, then the metadata (manifest last)
    table = ws.datastore.read_bytes(prep["outputs"]["table"]["key"] + "/table.csv").decode().splitlines()
    assert len(table) == 301 and table[0] == "x1,x2,x3,label"

    assert prep["registered"] == {"quickstart_table": 1}
    version = ws.datasets.get("quickstart_table", 1)
    assert version.digest == prep["outputs"]["table"]["digest"]
    assert version.producing_run["run_id"] == result.run_id
    assert asset_events(result.run_id) == [
        ("x-mlpipe://datasets/quickstart_table", "prep", {"version": 1, "digest": version.digest})
    ]

    again = run(load(quickstart_dags, "quickstart"), {"rows": 300, "epochs": 5})
    assert again.reused() == {"prep": True, "train": True}
    assert again.xcoms["prep"]["registered"] == {"quickstart_table": 1}
    assert again.xcoms["train"]["metrics"] == train["metrics"]
    assert ws.datasets.version_numbers("quickstart_table") == [1]
    assert asset_events(again.run_id) == []


def airflow_cli(args: list[str], dags, target, timeout: float = scaled(180)) -> subprocess.CompletedProcess:
    env = dict(os.environ, AIRFLOW__CORE__DAGS_FOLDER=str(dags), AIRFLOW_CONN_MLPIPE_DEFAULT=target.connection())
    return subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def latest_run_states(dag_id: str) -> tuple[dict, dict]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())).first()
        tis = dag_run.get_task_instances(session=session)
        return {ti.task_id: str(ti.state) for ti in tis}, {ti.task_id: ti.try_number for ti in tis}


@pytest.mark.integration  # runs `airflow dags test` as a subprocess (a whole Airflow start, ~25 s)
def test_airflow_dags_test_cli_conf(airflow_db, tmp_path):
    """``airflow dags test mlpipe_quickstart -c ...`` with the real CLI, in a subprocess."""
    dags = make_dags_folder(tmp_path / "dags", {"quickstart": QUICKSTART.replace("mlpipe_quickstart", "qs_cli")},
                            copy_quickstart_sources=True)
    target = local_target(tmp_path / "ws")
    ws = target.open()

    # a conf value of the wrong type: Airflow refuses the run before any task, nothing in the workspace
    bad = airflow_cli(["dags", "test", "qs_cli", "-c", '{"rows": "x"}'], dags, target)
    assert bad.returncode != 0
    assert "ParamValidationError" in bad.stderr + bad.stdout and "rows" in bad.stderr + bad.stdout
    assert list(ws.datastore.list("runs/")) == [] and list(ws.datastore.list("outputs/")) == []

    # an integer the runtime cannot carry: the Param's schema bounds it (the declared bound of seed here; an
    # integer param without bounds gets spec/values.py's 2^53-1), Airflow refuses it
    huge = airflow_cli(["dags", "test", "qs_cli", "-c", json.dumps({"seed": 10**30})], dags, target)
    assert huge.returncode != 0
    assert "ParamValidationError" in huge.stderr + huge.stdout and "2147483647" in huge.stderr + huge.stdout
    assert list(ws.datastore.list("runs/")) == []

    # an unknown key: the first task fails at once with the ConfError (no retry), no step ran
    unknown = airflow_cli(["dags", "test", "qs_cli", "-c", '{"bogus": 1}'], dags, target)
    out = unknown.stdout + unknown.stderr
    assert "qs_cli has no param 'bogus'; declared params: epochs, learning_rate, regenerate_outputs, rows, seed" in out
    states, tries = latest_run_states("qs_cli")
    assert states == {"prep": "failed", "train": "upstream_failed"}
    assert tries["prep"] == 1  # retries: 1 in the definition, but a bad conf is not worth a retry
    assert list(ws.datastore.list("runs/")) == [] and list(ws.datastore.list("outputs/")) == []
    assert list(ws.datastore.list("datasets/")) == []

    # a good conf: the value reaches the step and the run record
    good = airflow_cli(["dags", "test", "qs_cli", "-c", json.dumps({"rows": 300})], dags, target)
    assert good.returncode == 0, good.stderr[-3000:]
    runs = ws.runs.list_runs("qs_cli")
    assert len(runs) == 1 and runs[0]["params"]["rows"] == 300 and runs[0]["conf"] == {"rows": 300}
    record = ws.runs.get_run("qs_cli", runs[0]["run_id"])
    assert {s: record["steps"][s]["status"] for s in ("prep", "train")} == {"prep": "succeeded", "train": "succeeded"}
    assert record["steps"]["prep"]["metrics"]["rows"] == 300
    states, _ = latest_run_states("qs_cli")
    assert states == {"prep": "success", "train": "success"}
