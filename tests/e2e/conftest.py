"""End-to-end fixtures: ONE real ``airflow standalone`` for the whole test session.

``airflow_standalone`` (session scope) starts Airflow through ``scripts/standalone.py`` on a temporary copy
of ``dags_examples/`` (the tests never write into the repository), with a workspace in the same temporary
home and a free port, and stops it when the session ends. It yields a dict:

- ``url``, ``username``, ``password``: the API server and its login (simple auth manager);
- ``env``: the environment of the Airflow processes (``AIRFLOW_HOME``, the ``mlpipe_default`` connection...);
- ``cli_env``: variables for ``mlpipe`` commands against this Airflow (``MLPIPE_AIRFLOW_URL``, user,
  password, ``MLPIPE_WORKSPACE``);
- ``workspace`` (path) and ``workspace_uri``: the workspace the steps write to;
- ``dags``: the temporary DAGs folder; ``home``: everything else (logs in ``home/standalone.log``).

Airflow loads the provider's plugin (the trigger-time conf check) as an installed provider has it
(tests/fixtures/entry_points.py). Test-only pipelines added to the copy (``TEST_PIPELINES``), so the examples stay examples:

- ``mlpipe_e2e_check`` (``pipelines/e2e_check.yaml``): one step, ``check``, whose script prints a few lines
  and exits 1 when the boolean param ``fail`` is true (a conf that passes the schema but fails the run;
  ``retries: 0`` so the failure is final at once). It is also scheduled on the dataset ``e2e_signal``, so
  registering a new version of that dataset (``mlpipe datasets register``) runs it through an Asset event.
- ``mlpipe_e2e_inputs`` (``pipelines/e2e_inputs.yaml``): one step, ``read``, whose inputs come from a
  ``dataset`` param (``data``, default ``e2e_table:latest``) and a ``path`` param (``extra``, default
  ``e2e/extra.txt``), plus a string and an integer param: the trigger-time refusals of each kind of value
  (tests/e2e/test_trigger_refusals.py). Nothing is registered for it here; its tests do that.

Helpers: ``wait_for_dag(info, dag_id)`` waits until the DAG processor has parsed a DAG.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys
import textwrap

import pytest

from tests.conftest import scaled
from tests.fixtures.entry_points import plugin_pythonpath

REPO = pathlib.Path(__file__).resolve().parents[2]

TEST_PIPELINES: dict[str, str] = {
    "e2e_check.py": '''\
        """Test-only: the e2e check pipeline (pipelines/e2e_check.yaml)."""

        from airflow_mlpipe.factory import load_dag

        dag = load_dag(__file__, "pipelines/e2e_check.yaml")
        ''',
    "pipelines/e2e_check.yaml": """\
        # Test-only (tests/e2e/conftest.py): fails on demand; runs when dataset e2e_signal gets a new version.
        pipeline: mlpipe_e2e_check
        version: 1
        schedule: {datasets: [e2e_signal]}
        start_date: 2026-01-01
        defaults: {compute: local, environment: plain, retries: 0, timeout: 5m}
        compute: {local: {type: local}}
        environments: {plain: {python: python3, requirements: []}}
        params:
          fail: {type: boolean, default: false, description: Make the step exit 1.}
          message: {type: string, default: hello, description: Printed by the step.}
        steps:
          check:
            script: check.py
            source_directory: ../src/e2e
            arguments: ["--fail", "${params.fail}", "--message", "${params.message}"]
            allow_reuse: false
            outputs:
              result: {}
        """,
    "e2e_inputs.py": '''\
        """Test-only: the e2e inputs pipeline (pipelines/e2e_inputs.yaml)."""

        from airflow_mlpipe.factory import load_dag

        dag = load_dag(__file__, "pipelines/e2e_inputs.yaml")
        ''',
    "pipelines/e2e_inputs.yaml": """\
        # Test-only (tests/e2e/conftest.py): one param of each kind a trigger can get wrong.
        pipeline: mlpipe_e2e_inputs
        version: 1
        schedule: null
        start_date: 2026-01-01
        defaults: {compute: local, environment: plain, retries: 0, timeout: 5m}
        compute: {local: {type: local}}
        environments: {plain: {python: python3, requirements: []}}
        params:
          data: {type: dataset, default: "e2e_table:latest", description: A registered dataset or a workspace path.}
          extra: {type: path, default: e2e/extra.txt, description: A file inside the workspace.}
          label: {type: string, default: run, description: Printed by the step.}
          count: {type: integer, default: 3, description: Printed by the step.}
        steps:
          read:
            script: read.py
            source_directory: ../src/e2e
            arguments: ["--data", "${inputs.data}", "--extra", "${inputs.extra}", "--label", "${params.label}",
                        "--count", "${params.count}"]
            allow_reuse: false
            inputs: {data: "${params.data}", extra: "${params.extra}"}
        """,
    "src/e2e/read.py": '''\
        """Test-only step: prints what its inputs hold."""

        import argparse
        import pathlib

        parser = argparse.ArgumentParser()
        parser.add_argument("--data", type=pathlib.Path, required=True)
        parser.add_argument("--extra", type=pathlib.Path, required=True)
        parser.add_argument("--label", required=True)
        parser.add_argument("--count", type=int, required=True)
        args = parser.parse_args()
        print("E2E-READ", args.label, args.count, sorted(p.name for p in args.data.iterdir()),
              args.extra.read_text().strip(), flush=True)
        ''',
    "src/e2e/check.py": '''\
        """Test-only step: prints a few lines, then exits 1 when --fail is true."""

        import argparse
        import sys

        from airflow_mlpipe.runtime import context

        parser = argparse.ArgumentParser()
        parser.add_argument("--fail", required=True)
        parser.add_argument("--message", required=True)
        args = parser.parse_args()
        for i in range(3):
            print(f"check line {i}: {args.message}", flush=True)
        if args.fail == "true":
            print("E2E-CHECK: failing on purpose (param fail=true)", flush=True)
            sys.exit(1)
        (context.outputs["result"] / "ok.txt").write_text(args.message)
        context.log_metric("ok", 1)
        ''',
}


def _standalone_module():
    scripts = str(REPO / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import standalone

    return standalone


def copy_dags(dest: pathlib.Path) -> pathlib.Path:
    """dags_examples/ plus the test-only pipelines, copied to ``dest``."""
    shutil.copytree(REPO / "dags_examples", dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
    for rel, text in TEST_PIPELINES.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return dest


@pytest.fixture(scope="session")
def airflow_standalone(tmp_path_factory):
    standalone = _standalone_module()
    home = tmp_path_factory.mktemp("airflow-standalone")
    dags = copy_dags(home / "dags")
    workspace = home / "workspace"
    workspace.mkdir()
    # the provider's plugin (trigger-time conf check) as an installed provider has it
    pythonpath = plugin_pythonpath(home / "entry-points")
    server = standalone.start(home, dags, port=standalone.free_port(), workspace=workspace.as_uri(),
                              extra_env={"PYTHONPATH": pythonpath}, timeout=scaled(240))
    try:
        info = {
            **server,
            "home": home,
            "dags": dags,
            "workspace": workspace,
            "workspace_uri": workspace.as_uri(),
            "cli_env": {
                "MLPIPE_AIRFLOW_URL": server["url"],
                "MLPIPE_AIRFLOW_USERNAME": server["username"],
                "MLPIPE_AIRFLOW_PASSWORD": server["password"],
                "MLPIPE_WORKSPACE": workspace.as_uri(),
            },
        }
        yield info
    finally:
        _reap_in_background(server["pid"])
        standalone.stop(home)


def _reap_in_background(pid: int) -> None:
    """standalone.start() launched Airflow as OUR child: once it exits it stays a zombie until we reap it
    (standalone.stop counts a zombie as gone, but the process table entry stays). Reap it as soon as it
    exits."""
    import threading

    def reap() -> None:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass

    threading.Thread(target=reap, name="reap-airflow-standalone", daemon=True).start()


def wait_for_dag(info: dict, dag_id: str, timeout: float = 180) -> dict:
    """Block until the DAG processor of ``info``'s Airflow has parsed ``dag_id`` (``timeout`` scaled by
    MLPIPE_TEST_TIMEOUT_FACTOR); returns the DAG."""
    timeout = scaled(timeout)
    from airflow_mlpipe.client import AirflowClient

    with AirflowClient(info["url"], username=info["username"], password=info["password"]) as client:
        return _standalone_module().wait_for_dag(client, dag_id, timeout=timeout)
