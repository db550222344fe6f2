"""Operators behave as Airflow expects of any operator: every task of the example DAGs (factory-built and
hand-written) survives ``copy.deepcopy`` (Airflow deep-copies tasks for ``partial_subset``, task clearing and
the ``airflow tasks test`` path) and each DAG can be cut to a subset around its last task."""

from __future__ import annotations

import copy
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_every_example_task_deep_copies_and_every_dag_subsets(airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("MLPIPE_CACHE_DIR", str(tmp_path / "cache"))
    bag = DagBag(dag_folder=str(REPO / "dags_examples"), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    ours = [dag for dag in bag.dags.values()
            if any(type(t).__module__.startswith("airflow_mlpipe.") for t in dag.tasks)]
    assert len(ours) >= 3, sorted(bag.dags)
    for dag in ours:
        for task in dag.tasks:
            twin = copy.deepcopy(task)
            assert twin.task_id == task.task_id and type(twin) is type(task)
        last = dag.tasks[-1].task_id
        subset = dag.partial_subset(task_ids=[last], include_upstream=True)
        assert last in subset.task_dict
        assert set(subset.task_dict) <= set(dag.task_dict)
