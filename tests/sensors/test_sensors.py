"""Sensors through real Airflow (dag.test(), which runs a deferred task's trigger in-process): a new dataset
version, new objects under a prefix, a model alias moving, a pipeline run finishing. The changes they wait
for are made by a background thread while the sensor is deferred, through the workspace API."""

from __future__ import annotations

import json
import textwrap
import threading

import pytest

from airflow_mlpipe.workspace.core import Workspace
from tests.conftest import scaled, use_dags_folder

SENSOR_DAG = textwrap.dedent(
    """
    import datetime
    from airflow.sdk import DAG
    from airflow_mlpipe.sensors.workspace import MlpipeDatasetSensor, MlpipeModelSensor

    def one(dag_id, sensor):
        with DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
            sensor
        return dag

    for dag_id, cls, kwargs in [
        ("wait_new_version", MlpipeDatasetSensor, {"name": "raw", "after_version": 1}),
        ("wait_new_objects", MlpipeDatasetSensor, {"prefix": "landing"}),
        ("wait_alias_moved", MlpipeModelSensor, {"name": "churn", "alias": "production", "after_version": 1}),
        ("wait_poke_mode", MlpipeDatasetSensor,
         {"name": "raw", "after_version": 2, "deferrable": False, "poke_interval": 0.5}),
    ]:
        with DAG(dag_id, schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
            cls(task_id="sensor", poll_interval=0.5, timeout=SENSOR_TIMEOUT, **{"deferrable": True, **kwargs})
        globals()[dag_id] = dag
    """
).replace("SENSOR_TIMEOUT", repr(scaled(60)))

RUN_DAGS = textwrap.dedent(
    """
    import datetime
    from airflow.sdk import DAG
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow_mlpipe.sensors.run import MlpipeRunSensor

    def work(**context):
        if context["params"].get("fail"):
            raise RuntimeError("failing on purpose")

    with DAG("mlpipe_watched", schedule=None, start_date=datetime.datetime(2026, 1, 1), params={"fail": False}) as watched:
        PythonOperator(task_id="work", python_callable=work)

    with DAG("mlpipe_watcher", schedule=None, start_date=datetime.datetime(2026, 1, 1),
             params={"run_id": ""}) as watcher:
        MlpipeRunSensor(task_id="wait_run", dag_id_to_watch="mlpipe_watched", run_id="{{ params.run_id }}",
                        poll_interval=0.5, timeout=SENSOR_TIMEOUT, deferrable=True)
    """
).replace("SENSOR_TIMEOUT", repr(scaled(60)))


@pytest.fixture
def sensor_env(tmp_path, monkeypatch, airflow_db):
    dags = tmp_path / "dags"
    dags.mkdir()
    workspace = (tmp_path / "ws").as_uri()
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT",
                       json.dumps({"conn_type": "mlpipe", "extra": {"workspace": workspace}}))
    use_dags_folder(monkeypatch, dags)
    return dags, Workspace.from_uri(workspace), tmp_path


def _load(dags, name, source):
    from airflow.dag_processing.dagbag import DagBag

    (dags / name).write_text(source)
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    return bag.dags


def _wait_while(dag, change, every: float | None = None) -> dict:
    """Run ``dag`` (one sensor) while a thread makes ``change`` 6 s later (after the sensor has deferred on
    a quiet machine), or again and again ``every`` seconds until the run ends. The sensor's event."""
    done = threading.Event()

    def changer():
        if done.wait(6):
            return
        change()
        while every and not done.wait(every):
            change()

    thread = threading.Thread(target=changer, daemon=True)
    thread.start()
    try:
        run = dag.test()
    finally:
        done.set()
        thread.join()
    assert run.state == "success"
    [ti] = run.get_task_instances()
    return ti.xcom_pull(task_ids="sensor")


@pytest.mark.integration  # four sensors each left waiting (deferred or poking) 6 s before the change: ~25 s
def test_workspace_sensors_wait_for_new_versions_objects_and_alias_moves(sensor_env):
    dags, ws, tmp = sensor_env
    data = tmp / "data"
    data.mkdir()
    (data / "a.csv").write_text("x\n1\n")
    ws.datasets.register("raw", data)  # version 1: the baseline
    model = tmp / "model"
    model.mkdir()
    (model / "m.json").write_text("{}")
    ws.models.register("churn", model)
    ws.models.set_alias("churn", "production", 1)
    found = _load(dags, "sensors.py", SENSOR_DAG)

    def new_version(text):
        (data / "a.csv").write_text(text)
        ws.datasets.register("raw", data)

    event = _wait_while(found["wait_new_version"], lambda: new_version("x\n2\n"))
    assert (event["name"], event["version"], event["previous"]) == ("raw", 2, 1)

    ws.datastore.write_bytes("landing/old.csv", b"x\n")
    counter = iter(range(1000))
    event = _wait_while(found["wait_new_objects"],
                        lambda: ws.datastore.write_bytes(f"landing/new-{next(counter)}.csv", b"x\n"), every=0.5)
    assert event["count"] >= 1 and "landing/old.csv" not in event["new_keys"]
    assert all(key.startswith("landing/new-") for key in event["new_keys"])

    def promote():
        (model / "m.json").write_text('{"v": 2}')
        ws.models.register("churn", model)
        ws.models.set_alias("churn", "production", 2)

    event = _wait_while(found["wait_alias_moved"], promote)
    assert (event["alias"], event["version"], event["previous"]) == ("production", 2, 1)

    event = _wait_while(found["wait_poke_mode"], lambda: new_version("x\n3\n"))
    assert (event["version"], event["previous"]) == (3, 2)


def test_run_sensor_ends_with_the_state_of_the_run_it_watches(sensor_env):
    dags, _, _ = sensor_env
    found = _load(dags, "runs.py", RUN_DAGS)
    ok = found["mlpipe_watched"].test()
    assert ok.state == "success"
    watcher = found["mlpipe_watcher"].test(run_conf={"run_id": ok.run_id})
    assert watcher.state == "success"
    bad = found["mlpipe_watched"].test(run_conf={"fail": True})
    assert bad.state == "failed"
    watcher = found["mlpipe_watcher"].test(run_conf={"run_id": bad.run_id})
    assert watcher.state == "failed"


@pytest.mark.parametrize("configured", ["True", "False"])
def test_deferrable_follows_airflows_default_unless_the_dag_says(monkeypatch, configured):
    from airflow_mlpipe.sensors.run import MlpipeRunSensor
    from airflow_mlpipe.sensors.workspace import MlpipeDatasetSensor, MlpipeModelSensor

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", configured)
    sensors = [MlpipeDatasetSensor(task_id="a", name="raw"), MlpipeDatasetSensor(task_id="b", prefix="landing"),
               MlpipeModelSensor(task_id="c", name="churn", alias="production"),
               MlpipeRunSensor(task_id="d", dag_id_to_watch="x", run_id="r")]
    assert [s.deferrable for s in sensors] == [configured == "True"] * 4
    assert MlpipeDatasetSensor(task_id="e", name="raw", deferrable=configured != "True").deferrable is (
        configured != "True")


RESCHEDULE_DAG = textwrap.dedent(
    """
    import datetime
    from airflow.sdk import DAG
    from airflow_mlpipe.hooks.workspace import MlpipeHook
    from airflow_mlpipe.sensors.workspace import MlpipeDatasetSensor

    class LandsWhileAway(MlpipeDatasetSensor):
        # the sensor's first run pokes once, finds nothing, and gives its slot back; the object lands right
        # then, while no run of the task is alive
        def poke(self, context):
            found = super().poke(context)
            if not found and context["task_reschedule_count"] == 0:
                MlpipeHook(self.mlpipe_conn_id).get_workspace().datastore.write_bytes("landing/new.csv", b"x")
            return found

    with DAG("wait_rescheduled", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        LandsWhileAway(task_id="sensor", prefix="landing", deferrable=False, mode="reschedule",
                       poke_interval=1, timeout=SENSOR_TIMEOUT)
    """
).replace("SENSOR_TIMEOUT", repr(scaled(30)))


def test_a_rescheduled_sensor_keeps_its_baseline(sensor_env):
    """mode="reschedule": the task gives its slot back between pokes and runs again. An object that lands while
    the sensor is away is still new to it: the baseline of the first run is kept in the task state store (before,
    each run took the listing again, so the new object became part of the baseline and the sensor timed out)."""
    dags, ws, _ = sensor_env
    ws.datastore.write_bytes("landing/old.csv", b"x\n")
    dag = _load(dags, "rescheduled.py", RESCHEDULE_DAG)["wait_rescheduled"]
    run = dag.test()
    assert run.state == "success"
    [ti] = run.get_task_instances()
    event = ti.xcom_pull(task_ids="sensor")
    assert event["new_keys"] == ["landing/new.csv"], event
