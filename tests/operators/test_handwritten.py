"""A hand-written DAG gets what a YAML pipeline gets, without the factory's help:

- ``compute=`` and ``environment=`` are checked by the models of the YAML format when the operator is built
  (a misspelt setting is an import error of the DAG file, naming the task and the field);
- ``other.output_ref("O")`` wires a step's input to another step's output and makes the edge (no ``>>``);
- a ``${params.X}`` input reads X's type from the DAG's param, and an upstream step is found in the DAG.

Real Airflow (DagBag, ``dag.test``), real step processes (local compute), a real workspace folder.
"""

from __future__ import annotations

import copy

import pytest

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.operators.step import MlpipeStepOperator
from tests.operators.kit import activate, dedent, local_target, run


def step(**kwargs):
    return MlpipeStepOperator(**{"task_id": "train", "script": "train.py", **kwargs})


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"compute": {"type": "docker", "image": "x", "cpu": 2}}, "compute.cpu: unknown field 'cpu' (did you mean 'cpus'?)"),
    ({"compute": {"type": "kubernetes", "image": "x", "namespce": "ml"}},
     "compute.namespce: unknown field 'namespce' (did you mean 'namespace'?)"),
    ({"compute": {"type": "gpu"}}, "compute.type: 'gpu' is not a compute type; use one of docker, kubernetes, local"),
    ({"compute": {"type": "docker", "memory": "lots"}}, "compute.memory: expected a memory size like '512m'"),
    ({"compute": {"type": "local", "kill_grace": -1}}, "compute.kill_grace: must be >= 0, got -1"),
    ({"environment": {"requirments": ["pandas"]}}, "environment.requirments: unknown field 'requirments' "
                                                    "(did you mean 'requirements'?)"),
    ({"environment": {"requirements": ["--index-url=http://x"]}}, "pip options are not allowed here"),
    ({"environment": {"env": {"A": ["not", "a", "string"]}}}, "environment.env: value of 'A' must be a string"),
])
def test_a_misspelt_or_invalid_setting_is_refused_when_the_operator_is_built(kwargs, expected):
    with pytest.raises(DefinitionError) as caught:
        step(**kwargs)
    message = str(caught.value)
    assert message.startswith("task 'train': ") and expected in message, message
    assert "docs/yaml-reference.md" in message


def test_valid_settings_are_kept_as_given():
    """Nothing is filled in (the targets read their defaults): the cache key does not depend on the door."""
    op = step(compute={"type": "docker", "image": "python:3.12-slim", "cpus": 0.5, "name": "small"},
              environment={"name": "plain", "python": "python3", "requirements": ["pandas>=2"]})
    assert op.compute == {"type": "docker", "image": "python:3.12-slim", "cpus": 0.5, "name": "small"}
    assert op.environment == {"name": "plain", "python": "python3", "requirements": ["pandas>=2"]}
    assert step().compute == {"type": "local"} and step().environment == {}


def test_output_ref_makes_the_edge_and_the_reference():
    from airflow.sdk import DAG, TaskGroup

    with DAG("wired", schedule=None):
        prep = step(task_id="prep", script="prep.py", outputs={"table": {}})
        train = step(inputs={"data": prep.output_ref("table"), "raw": "income_raw:latest"})
        with pytest.raises(DefinitionError, match=r"step 'prep' has no output 'tabel' \(its outputs: table\)"):
            prep.output_ref("tabel")
        with TaskGroup("group"):
            grouped = step(task_id="inner", outputs={"x": {}})
        with pytest.raises(DefinitionError, match="its name cannot be referenced by another step"):
            grouped.output_ref("x")
    assert train.upstream_task_ids == {"prep"}
    assert train.inputs == {"data": "${steps.prep.outputs.table}", "raw": "income_raw:latest"}
    assert type(train.inputs["data"]) is str  # plain data: serialized and copied like any string
    assert train.upstream_steps == {"prep": "prep"}
    assert copy.deepcopy(train).upstream_steps == {"prep": "prep"}


DAG_FILE = """
import datetime
import pathlib

from airflow.sdk import DAG, Param

from airflow_mlpipe.operators.model import MlpipeRegisterModelOperator
from airflow_mlpipe.operators.step import MlpipeStepOperator

SRC = str(pathlib.Path(__file__).parent / "src")
PLAIN = {"python": "python3", "requirements": []}

with DAG(dag_id="wired", schedule=None, start_date=datetime.datetime(2026, 1, 1),
         params={"folder": Param("data/in", type="string", mlpipe_type="path")}) as dag:
    prep = MlpipeStepOperator(task_id="prep", script="prep.py", source_directory=SRC, environment=PLAIN,
                              arguments=["--src", "${inputs.src}", "--out", "${outputs.table}"],
                              inputs={"src": "${params.folder}"}, outputs={"table": {}})
    train = MlpipeStepOperator(task_id="train", script="train.py", source_directory=SRC, environment=PLAIN,
                               arguments=["--data", "${inputs.data}", "--out", "${outputs.model}"],
                               inputs={"data": prep.output_ref("table")}, outputs={"model": {}})
    MlpipeRegisterModelOperator(task_id="register", model_name="wired", inputs={"model": train.output_ref("model")})
"""

PREP = """
import argparse, pathlib
p = argparse.ArgumentParser(); p.add_argument("--src"); p.add_argument("--out"); a = p.parse_args()
rows = sum(len(f.read_text().splitlines()) for f in pathlib.Path(a.src).rglob("*.csv"))
(pathlib.Path(a.out) / "rows.txt").write_text(str(rows))
"""

TRAIN = """
import argparse, pathlib
from airflow_mlpipe.runtime import context
p = argparse.ArgumentParser(); p.add_argument("--data"); p.add_argument("--out"); a = p.parse_args()
rows = int((pathlib.Path(a.data) / "rows.txt").read_text())
(pathlib.Path(a.out) / "model.txt").write_text(f"trained on {rows} rows")
context.log_metric("rows", rows)
"""


@pytest.mark.integration  # three dag.test runs with real step processes (about 30 s): out of make test-unit
def test_a_handwritten_dag_wired_with_output_ref_runs_and_reuses(airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    files = {"wired.py": DAG_FILE, "src/prep.py": PREP, "src/train.py": TRAIN, ".airflowignore": "src/\n"}
    for rel, text in files.items():
        (dags / rel).parent.mkdir(parents=True, exist_ok=True)
        (dags / rel).write_text(dedent(text))
    target = local_target(tmp_path / "ws")
    ws = target.open()
    for rel, text in {"a.csv": "1\n2\n", "sub/b.csv": "3\n"}.items():
        ws.datastore.write_bytes(f"data/in/{rel}", text.encode())
    activate(monkeypatch, dags, target)
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["wired"]
    assert dag.task_dict["train"].upstream_task_ids == {"prep"}
    assert dag.task_dict["register"].upstream_task_ids == {"train"}

    first = run(dag)
    assert first.states == {"prep": "success", "train": "success", "register": "success"}, first.states
    assert first.xcoms["train"]["metrics"] == {"rows": 3}
    # the path param's type comes from the DAG's Param: a folder of the workspace, hashed by content
    record = ws.runs.get_run("wired", first.run_id)["steps"]
    assert record["prep"]["inputs"]["src"]["kind"] == "folder"
    assert record["register"]["model"]["name"] == "wired"

    again = run(DagBag(dag_folder=str(dags), safe_mode=False).dags["wired"])
    assert again.reused() == {"prep": True, "train": True, "register": True}
    ws.datastore.write_bytes("data/in/c.csv", b"4\n")
    changed = run(DagBag(dag_folder=str(dags), safe_mode=False).dags["wired"])
    assert changed.reused() == {"prep": False, "train": False, "register": False}
    assert changed.xcoms["train"]["metrics"] == {"rows": 4}


def test_a_misspelt_setting_is_an_import_error_of_its_dag_file_only(airflow_db, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "good.py").write_text(dedent(DAG_FILE))
    (dags / "typo.py").write_text(dedent(DAG_FILE).replace('dag_id="wired"', 'dag_id="typo"')
                                  .replace("environment=PLAIN,\n", 'environment=PLAIN, compute={"type": "local", '
                                           '"kill_grce": 5},\n', 1))
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert "wired" in bag.dags and "typo" not in bag.dags
    (path, error), = bag.import_errors.items()
    assert path.endswith("typo.py")
    assert "task 'prep': compute.kill_grce: unknown field 'kill_grce' (did you mean 'kill_grace'?)" in error
