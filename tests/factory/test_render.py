"""The factory renders every example definition to the DAG it describes, ``mlpipe compile`` writes a file
that builds the same DAG, and building a DAG respects the parse-time budget (no network, no subprocess,
stable order)."""

from __future__ import annotations

import datetime
import importlib.util
import pathlib
import socket
import subprocess

import pytest

from airflow_mlpipe.factory import REGENERATE_DESCRIPTION, load_dag
from airflow_mlpipe.spec import load_pipeline, param_json_schema

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "dags_examples"
DEFINITIONS = sorted((EXAMPLES / "pipelines").glob("*.yaml"))
UTC = datetime.timezone.utc


def build(path: pathlib.Path):
    return load_dag(EXAMPLES / "stub.py", path)


def tasks_of(dag, step: str) -> list:
    """The tasks a step became: one task named like the step, or the tasks of its task group."""
    return [t for t in dag.tasks if t.task_id == step or t.task_id.startswith(step + ".")]


def test_quickstart_renders_exactly():
    dag = build(EXAMPLES / "pipelines" / "quickstart.yaml")
    assert dag.dag_id == "mlpipe_quickstart"
    assert [t.task_id for t in dag.tasks] == ["prep", "train"]
    assert {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks} == {"prep": [], "train": ["prep"]}
    assert type(dag.task_dict["prep"]).__name__ == "MlpipeStepOperator"
    assert dag.schedule is None and type(dag.timetable).__name__ == "NullTimetable" and dag.max_active_runs == 4 and dag.catchup is False
    assert dag.start_date == datetime.datetime(2026, 1, 1, tzinfo=UTC)
    assert sorted(dag.tags) == ["example", "mlpipe", "quickstart"]
    assert dag.owner == "ml-team"
    assert dag.description == "Prepare a synthetic tabular dataset and train a logistic-regression classifier on it."
    assert dag.default_args == {"owner": "ml-team", "retries": 1, "execution_timeout": datetime.timedelta(minutes=10)}
    for task in dag.tasks:
        assert (task.owner, task.retries, task.execution_timeout) == ("ml-team", 1, datetime.timedelta(minutes=10))

    params = {name: dag.params.get_param(name) for name in dag.params}
    assert list(params) == ["rows", "seed", "learning_rate", "epochs", "regenerate_outputs"]
    expected = {
        "rows": (2000, "Number of synthetic rows to generate.",
                 {"mlpipe_type": "integer", "type": "integer", "minimum": 100, "maximum": 100000}),
        "seed": (7, "Random seed for the data generator.",
                 {"mlpipe_type": "integer", "type": "integer", "minimum": 0, "maximum": 2147483647}),
        "learning_rate": (0.5, "Gradient-descent step size used by the train step.",
                          {"mlpipe_type": "number", "type": "number", "exclusiveMinimum": 0, "maximum": 10}),
        "epochs": (30, "Passes over the training data (the largest rows x epochs run takes a few minutes).",
                   {"mlpipe_type": "integer", "type": "integer", "minimum": 1, "maximum": 300}),
        "regenerate_outputs": (False, REGENERATE_DESCRIPTION, {"type": "boolean"}),
    }
    for name, (default, description, schema) in expected.items():
        param = params[name]
        assert param.value == default and param.description == description
        assert {k: v for k, v in param.schema.items() if k != "title"} == schema, name

    prep, train = dag.task_dict["prep"], dag.task_dict["train"]
    assert prep.arguments == ["--rows", "${params.rows}", "--seed", "${params.seed}", "--out", "${outputs.table}"]
    assert prep.outputs == {"table": {"destination": "outputs/{pipeline}/{run_id}/{step}/{output}",
                                      "register_as": "quickstart_table"}}
    from airflow_mlpipe.operators.resolve import params_referenced

    assert params_referenced(prep) == ["rows", "seed"] and params_referenced(train) == ["epochs", "learning_rate"]
    assert train.inputs == {"table": "${steps.prep.outputs.table}"}
    assert pathlib.Path(train.source_directory) == EXAMPLES / "src" / "quickstart"
    assert prep.compute["type"] == "local" and prep.environment["requirements"] == []
    assert [a.name for a in prep.outlets] == ["mlpipe.dataset-alias.quickstart_table"]


@pytest.mark.parametrize("path", DEFINITIONS, ids=[p.stem for p in DEFINITIONS])
def test_every_example_matches_its_definition(path):
    """Generic check of every example: tasks, edges, params, schedule and settings follow the spec."""
    spec = load_pipeline(path)
    dag = build(path)
    assert dag.dag_id in (spec.pipeline, f"{spec.pipeline}_v{spec.version}")  # a published version: NAME_vN
    for step in spec.step_order():
        assert tasks_of(dag, step), f"step {step} has no task"
        for upstream in spec.upstream(step):
            up_ids = {t.task_id for t in tasks_of(dag, upstream)}
            assert any(t.upstream_task_ids & up_ids for t in tasks_of(dag, step)), (step, upstream)
    covered = {t.task_id for s in spec.step_order() for t in tasks_of(dag, s)}
    assert covered == set(dag.task_dict)

    assert list(dag.params) == [*spec.params, "regenerate_outputs"]
    for name, pspec in spec.params.items():
        param = dag.params.get_param(name)
        schema = param_json_schema(pspec)
        assert param.description == pspec.description
        assert param.value == pspec.default
        for key, value in schema.items():
            if key not in ("description", "default"):
                assert param.schema[key] == value, (name, key)
    regen = dag.params.get_param("regenerate_outputs")
    assert regen.value is False and regen.schema["type"] == "boolean"

    assert sorted(dag.tags) == sorted({*spec.tags, "mlpipe"})
    assert dag.owner == (spec.owner or "airflow")
    if spec.schedule is None:
        assert dag.schedule is None and type(dag.timetable).__name__ == "NullTimetable"
    elif isinstance(spec.schedule, str):
        assert dag.schedule == spec.schedule
    defaults = spec.defaults
    if defaults is not None and defaults.retries is not None:
        assert dag.default_args["retries"] == defaults.retries
    for step in spec.step_order():
        for task in tasks_of(dag, step):
            assert task.retries == spec.resolved_retries(step)
            timeout = spec.resolved_timeout(step)
            assert task.execution_timeout == (datetime.timedelta(seconds=timeout) if timeout else None)


OPERATOR_FIELDS = ("script", "arguments", "inputs", "outputs", "environment", "compute", "allow_reuse",
                   "hash_paths", "pipeline", "compute_resources", "retries",
                   "execution_timeout", "owner", "doc_md")


def exec_compiled(source: str, path: pathlib.Path):
    path.write_text(source)
    module_spec = importlib.util.spec_from_file_location(f"compiled_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.dag


@pytest.mark.parametrize("path", DEFINITIONS, ids=[p.stem for p in DEFINITIONS])
def test_compiled_file_builds_the_same_dag(path, tmp_path):
    from airflow_mlpipe.factory.compile import compile_source

    spec = load_pipeline(path)
    out_dir = tmp_path / "compiled"
    out_dir.mkdir()
    compiled = exec_compiled(compile_source(spec, out_dir), out_dir / f"{path.stem}.py")
    built = build(path)

    assert [t.task_id for t in compiled.tasks] == [t.task_id for t in built.tasks]
    for task in built.tasks:
        twin = compiled.task_dict[task.task_id]
        assert type(twin) is type(task)
        assert sorted(twin.upstream_task_ids) == sorted(task.upstream_task_ids)
        for field in OPERATOR_FIELDS:
            if hasattr(task, field):
                assert getattr(twin, field) == getattr(task, field), (task.task_id, field)
        if hasattr(task, "source_directory"):
            assert pathlib.Path(twin.source_directory).resolve() == pathlib.Path(task.source_directory).resolve()
        assert [o.name for o in twin.outlets] == [o.name for o in task.outlets]
    assert list(compiled.params) == list(built.params)
    for name in built.params:
        a, b = compiled.params.get_param(name), built.params.get_param(name)
        assert (a.value, a.description, a.schema) == (b.value, b.description, b.schema), name
    for attr in ("dag_id", "description", "doc_md", "start_date", "max_active_runs", "catchup", "default_args",
                 "owner"):
        assert getattr(compiled, attr) == getattr(built, attr), attr
    assert sorted(compiled.tags) == sorted(built.tags)
    assert repr(compiled.schedule) == repr(built.schedule)
    assert type(compiled.timetable) is type(built.timetable)


def test_building_a_dag_contacts_nothing_and_is_deterministic(monkeypatch):
    """No socket connection and no subprocess while the factory builds DAGs; the same file gives the same
    task order, params and edges twice in a row."""
    import airflow_mlpipe.factory  # noqa: F401 - imports done before the guards go up

    def forbidden(*args, **kwargs):
        raise AssertionError(f"parse-time network or subprocess call: {args!r}")

    first = {p.stem: build(p) for p in DEFINITIONS}  # warm imports (builders import operator modules lazily)
    monkeypatch.setattr(socket.socket, "connect", forbidden)
    monkeypatch.setattr(socket.socket, "connect_ex", forbidden)
    monkeypatch.setattr(subprocess.Popen, "__init__", forbidden)
    second = {p.stem: build(p) for p in DEFINITIONS}
    third = {p.stem: build(p) for p in DEFINITIONS}
    for name in first:
        shapes = [
            ([t.task_id for t in dag.tasks], list(dag.params), {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks},
             [t.task_id for t in dag.topological_sort()])
            for dag in (first[name], second[name], third[name])
        ]
        assert shapes[0] == shapes[1] == shapes[2], name


def test_every_dag_file_builds_one_dag():
    """A task re-parses its DAG file before it runs. With one DAG per file (one stub per definition, one
    endpoint DAG per endpoint file) a worker builds only the DAG it runs, which is what honouring
    ``get_parsing_context()`` buys a file that builds several."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(EXAMPLES))
    assert not bag.import_errors, bag.import_errors
    per_file: dict[str, list[str]] = {}
    for dag_id, dag in bag.dags.items():
        per_file.setdefault(dag.fileloc, []).append(dag_id)
    assert len(per_file) == len(bag.dags) >= 7
    assert all(len(ids) == 1 for ids in per_file.values()), per_file
