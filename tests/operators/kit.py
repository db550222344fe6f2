"""Helpers shared by the operator and factory suites: a throw-away DAGs folder per test (``dag.test()`` in
Airflow 3.3 only runs a DAG that lives in the configured DAGs folder), the ``mlpipe_default`` connection
pointing at a per-test workspace (local directory or moto S3), and readers of a finished DagRun.

Everything here is real: Airflow runs the DAG (``dag.test``), the step runs as a subprocess through the
local compute target, the workspace is a directory or a moto S3 server.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import textwrap
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "dags_examples"

STUB = 'from airflow_mlpipe.factory import load_dag\n\ndag = load_dag(__file__, "pipelines/{name}.yaml")\n'


@dataclasses.dataclass
class WorkspaceTarget:
    """Where a test's workspace lives: the URI, the S3 options (empty for a local directory) and the
    connection JSON for ``AIRFLOW_CONN_MLPIPE_DEFAULT``."""

    backend: str
    uri: str
    options: dict[str, Any]

    def connection(self) -> str:
        doc: dict[str, Any] = {"conn_type": "mlpipe", "extra": {"workspace": self.uri}}
        if self.options:
            doc["login"] = self.options["aws_access_key_id"]
            doc["password"] = self.options["aws_secret_access_key"]
            doc["extra"].update(endpoint_url=self.options["endpoint_url"], region_name=self.options["region_name"])
        return json.dumps(doc)

    def open(self):
        from airflow_mlpipe.workspace.core import Workspace

        return Workspace.from_uri(self.uri, **self.options)


def local_target(root: pathlib.Path) -> WorkspaceTarget:
    root.mkdir(parents=True, exist_ok=True)
    return WorkspaceTarget("local", root.resolve().as_uri(), {})


def with_requirements(pipeline: str, target: WorkspaceTarget) -> str:
    """Fill ``REQUIREMENTS`` in a definition: a step that reads or writes an S3 workspace needs boto3 in
    its environment (the runtime is stdlib-only except for the S3 client)."""
    return pipeline.replace("REQUIREMENTS", "[boto3]" if target.backend == "s3" else "[]")


def dedent(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def make_dags_folder(root: pathlib.Path, pipelines: dict[str, str], files: dict[str, str] | None = None,
                     copy_quickstart_sources: bool = False) -> pathlib.Path:
    """``root/pipelines/<name>.yaml`` + a stub ``root/<name>.py`` per pipeline, plus ``files`` (path relative
    to ``root`` -> text). With ``copy_quickstart_sources`` the example sources land in ``root/src``."""
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    if copy_quickstart_sources:
        shutil.copytree(EXAMPLES / "src", root / "src", dirs_exist_ok=True)
    for name, text in pipelines.items():
        (root / "pipelines" / f"{name}.yaml").write_text(dedent(text))
        (root / f"{name}.py").write_text(STUB.format(name=name))
    for rel, text in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dedent(text))
    return root


def activate(monkeypatch, dags_folder: pathlib.Path, target: WorkspaceTarget) -> None:
    """Point Airflow (read at call time) at ``dags_folder`` and ``mlpipe_default`` at the workspace."""
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags_folder))
    # the default bundle list derives its path from the DAGs folder once per process (first use), so a
    # later test's folder would be ignored by dag.test(): name the bundle's path explicitly
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([{
        "name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(dags_folder)}}]))
    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT", target.connection())


def load(dags_folder: pathlib.Path, name: str):
    from airflow_mlpipe.factory import load_dag

    return load_dag(dags_folder / f"{name}.py", f"pipelines/{name}.yaml")


@dataclasses.dataclass
class RunResult:
    dag_run: Any
    states: dict[str, str]
    xcoms: dict[str, Any]
    tries: dict[str, int]

    @property
    def run_id(self) -> str:
        return self.dag_run.run_id

    @property
    def state(self) -> str:
        return str(self.dag_run.state)

    def reused(self) -> dict[str, bool | None]:
        return {task: (x or {}).get("reused") for task, x in self.xcoms.items()}

    def ran(self) -> set[str]:
        return {task for task, reused in self.reused().items() if reused is False}


def run(dag, conf: dict | None = None) -> RunResult:
    """``dag.test(run_conf=conf)`` and the final state, XCom return value and try number of each task."""
    dag_run = dag.test(run_conf=conf)
    states, xcoms, tries = {}, {}, {}
    for ti in dag_run.get_task_instances():
        states[ti.task_id] = str(ti.state)
        xcoms[ti.task_id] = ti.xcom_pull(task_ids=ti.task_id)
        tries[ti.task_id] = ti.try_number
    return RunResult(dag_run, states, xcoms, tries)


def edit_source(dags_folder: pathlib.Path, rel: str, old: str, new: str) -> None:
    """Replace ``old`` by ``new`` (once) in a source file of the DAGs folder, as a user's edit would."""
    path = dags_folder / rel
    text = path.read_text()
    if text.count(old) != 1:
        raise ValueError(f"{old!r} must occur exactly once in {path}")
    path.write_text(text.replace(old, new))


def private_airflow_home(root: pathlib.Path, template: pathlib.Path | None = None) -> pathlib.Path:
    """An AIRFLOW_HOME of its own with a migrated SQLite DB, for Airflow subprocesses that must not share
    the suite's DB. The first call migrates ``template`` (a subprocess); later ones copy its DB file."""
    import subprocess
    import sys

    from tests.conftest import scaled

    template = template or root.parent / "airflow-template"
    if not (template / "airflow.db").exists():
        template.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, AIRFLOW_HOME=str(template))
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                       capture_output=True, timeout=scaled(300))
    root.mkdir(parents=True)
    shutil.copy(template / "airflow.db", root / "airflow.db")
    return root
