"""The seeds' retraining scenario through real Airflow (dag.test): retrain on the default data, then on
a second data path given in the conf; champion/challenger decides which model holds `production`."""

from __future__ import annotations

import pytest

from airflow_mlpipe.workspace.core import Workspace
from tests.models.conftest import XCOM_KEYS, run_pipeline


@pytest.mark.integration
def test_retrain_twice_promotes_the_better_model_and_records_the_other(income_env):
    dags, workspace = income_env
    ws = Workspace.from_uri(workspace)

    first, xcoms = run_pipeline(dags, "income_retrain.yaml")
    assert first.state == "success", xcoms
    assert xcoms["register"][1]["model"]["version"] == 1
    assert ws.models.get_alias("income", "production") == 1  # no champion yet: promoted

    second, xcoms2 = run_pipeline(dags, "income_retrain.yaml", {"training_data": "data/income/non_us.csv"})
    assert second.state == "success", xcoms2
    assert not xcoms2["prep"][1]["reused"], "new training data: prep must re-run"
    v2 = xcoms2["register"][1]["model"]
    assert v2["version"] == 2
    assert sorted(v.version for v in ws.models.list_versions("income")) == [1, 2]

    auc1 = ws.models.get("income", 1).extra["metrics"]["auc"]
    auc2 = ws.models.get("income", 2).extra["metrics"]["auc"]
    better, worse = (1, 2) if auc1 >= auc2 else (2, 1)
    assert ws.models.get_alias("income", "production") == better
    decision = ws.models.decision("income", 2)
    assert decision is not None
    assert decision["candidate_value"] == pytest.approx(auc2)
    assert decision["champion_version"] == 1 and decision["champion_value"] == pytest.approx(auc1)
    assert decision["promoted"] is (better == 2)
    assert ("does not beat" in decision["reason"]) is (worse == 2)
    # the run record and XCom carry the decision with both metrics
    promote = xcoms2["promote"][1]
    assert promote["metrics"] == {"candidate_auc": pytest.approx(auc2), "champion_auc": pytest.approx(auc1)}
    record = ws.runs.get_run("income_retrain_v2", second.run_id)["steps"]["promote"]
    assert record["decision"]["promoted"] is decision["promoted"]
    # lineage: the first version was trained on income_raw v1
    lineage = ws.models.get("income", 1).extra["lineage"]
    assert lineage["prep.raw"]["name"] == "income_raw" and lineage["prep.raw"]["version"] == 1
    # the alias keeps its history
    history = ws.models.alias_record("income", "production")["history"]
    assert [h["version"] for h in history] == ([1] if better == 1 else [1, 2])


@pytest.mark.integration
def test_rerun_with_the_same_inputs_reuses_every_step(income_env):
    dags, _ = income_env
    run_pipeline(dags, "income_retrain.yaml")
    run, xcoms = run_pipeline(dags, "income_retrain.yaml")
    assert run.state == "success"
    assert {name: value["reused"] for name, (_, value) in xcoms.items()} == {
        "prep": True, "train": True, "evaluate": True, "register": True, "promote": True,
    }
    # python steps, register_model and compare: one XCom shape
    assert {name: set(value) for name, (_, value) in xcoms.items()} == {name: XCOM_KEYS for name in xcoms}
    assert xcoms["promote"][1]["decision"]["promoted"] is True and xcoms["prep"][1]["decision"] is None
