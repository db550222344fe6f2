"""A templated ``model_name`` on the register operator: the name is rendered when the task runs, and the new
version's Asset event goes to the model the rendered name designates (Airflow's AssetAlias is made for assets
known only at run time). Before, the outlet was built at parse time from the unrendered ``{{ ... }}``. The
task is also the first of its run here (a hand-written DAG): it opens the run record; before, it failed reading
the lineage of a run nobody had recorded."""

from __future__ import annotations

import json
import textwrap

from airflow_mlpipe.workspace.core import Workspace
from tests.conftest import use_dags_folder

DAG_SOURCE = textwrap.dedent(
    """
    import datetime
    from airflow.sdk import DAG
    from airflow_mlpipe.operators.model import MlpipeRegisterModelOperator

    with DAG("register_templated", schedule=None, start_date=datetime.datetime(2026, 1, 1),
             params={"model": "churn_a"}) as dag:
        MlpipeRegisterModelOperator(task_id="register", model_name="{{ params.model }}",
                                    inputs={"model": "model_files"}, aliases=["candidate"])
    """
)


def test_a_templated_model_name_registers_and_announces_the_rendered_model(tmp_path, monkeypatch, airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "register_templated.py").write_text(DAG_SOURCE)
    ws_uri = (tmp_path / "ws").as_uri()
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT",
                       json.dumps({"conn_type": "mlpipe", "extra": {"workspace": ws_uri}}))
    use_dags_folder(monkeypatch, dags)
    ws = Workspace.from_uri(ws_uri)
    files = tmp_path / "model"
    files.mkdir()
    (files / "weights.json").write_text('{"w": [1, 2, 3]}')
    ws.datasets.register("model_files", files)

    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["register_templated"]
    assert not any("{{" in str(getattr(o, "name", "")) for o in dag.task_dict["register"].outlets)

    run = dag.test(run_conf={"model": "churn_b"})
    assert run.state == "success"
    assert ws.models.version_numbers("churn_b") == [1]
    assert ws.models.version_numbers("churn_a") == []
    with create_session() as session:
        uris = [uri for (uri,) in session.query(AssetModel.uri).join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetEvent.source_run_id == run.run_id)]
    assert uris == ["x-mlpipe://models/churn_b"], uris
    # the task was the run's first: it opened the run, so the run is listed with its step
    record = ws.runs.get_run("register_templated", run.run_id)
    assert record["params"]["model"] == "churn_b"
    assert record["steps"]["register"]["model"]["name"] == "churn_b"
