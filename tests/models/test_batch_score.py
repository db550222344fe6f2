"""Batch inference through real Airflow (dag.test): the model reference models:/income@production is
resolved when the run executes, so a newly promoted model is used with no change to the DAG; 1,000,000
rows are scored in 4 mapped partitions and merged without losing or duplicating a row."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from airflow_mlpipe.workspace.core import Workspace
from tests.models.conftest import REPO, XCOM_KEYS, run_pipeline


def _model_version_used(ws: Workspace, run) -> int:
    record = ws.runs.get_run("income_batch_score", run.run_id)["steps"]
    versions = {r["inputs"]["model"]["version"] for name, r in record.items() if name.startswith("score.partition")}
    assert len(versions) == 1, versions
    return versions.pop()


@pytest.mark.integration
def test_batch_scoring_follows_the_production_alias_and_keeps_every_row(income_env, tmp_path):
    dags, workspace = income_env
    ws = Workspace.from_uri(workspace)

    run, _ = run_pipeline(dags, "income_retrain.yaml", {"epochs": 1})  # a weak first model, promoted
    assert run.state == "success" and ws.models.get_alias("income", "production") == 1
    run, xcoms = run_pipeline(dags, "income_batch_score.yaml")
    assert run.state == "success", xcoms
    assert _model_version_used(ws, run) == 1

    run, _ = run_pipeline(dags, "income_retrain.yaml")  # 40 epochs: better AUC, promoted
    assert run.state == "success" and ws.models.get_alias("income", "production") == 2

    rows = 1_000_000
    data = tmp_path / "million.csv"
    subprocess.run([sys.executable, str(REPO / "dags_examples/src/income/make_data.py"), "--rows", str(rows),
                    "--seed", "9", "--no-label", "--out", str(data)], check=True, capture_output=True)
    ws.datastore.upload_file(data, "data/income/million.csv")

    run, xcoms = run_pipeline(dags, "income_batch_score.yaml", {"scoring_data": "data/income/million.csv"})
    assert run.state == "success", {k: v[0] for k, v in xcoms.items()}
    assert _model_version_used(ws, run) == 2, "the newly promoted model is picked up, the DAG is unchanged"
    partitions = [xcoms[f"score.partition[{i}]"][1] for i in range(4)]
    assert all(p["metrics"]["rows_scored"] > 0 for p in partitions)
    assert sum(p["metrics"]["rows_scored"] for p in partitions) == rows
    merged = xcoms["score.merge"][1]
    assert merged["metrics"]["rows_scored"] == rows
    assert merged["registered"] == {"income_scores": 2}
    assert set(merged) == set(partitions[0]) == XCOM_KEYS  # the merge returns what every step returns
    report = xcoms["report"][1]["metrics"]
    assert report["scored_rows"] == report["input_rows"] == rows
    # the merged output is one dataset version holding the 4 partitions' files
    version = ws.datasets.get("income_scores", 2)
    assert version.files == 4
    scores_dir = pathlib.Path(ws.datastore.local_path(version.key))
    counted = sum(sum(1 for _ in open(f, "rb")) - 1 for f in scores_dir.rglob("part-*.csv"))
    assert counted == rows
