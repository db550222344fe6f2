"""Permanent failures end the task in its first attempt; transient ones keep Airflow's retries.

Every step here has ``retries: 3`` (the suite's retry delay is 1 s). A permanent failure (an input naming
no registered dataset, a script missing from its source directory, an exit code the step marks permanent)
must fail in try 1 with a message that says what to change; a transient one (an exit code not marked
permanent, a killed step: tests/operators/test_kill_retry.py) is retried and then succeeds. All through
``dag.test()`` and the local compute target (real subprocesses, a real workspace folder).
"""

from __future__ import annotations

from tests.operators.kit import activate, dedent, load, local_target, make_dags_folder, run

PIPELINE = """
pipeline: fail_fast
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 3}
compute:
  local: {type: local}
environments:
  plain: {python: python3}
steps:
  unknown_input:
    script: cli.py
    source_directory: ../src
    arguments: [--data, "${inputs.data}"]
    inputs: {data: "incme_raw:latest"}
  usage_error:
    script: cli.py
    source_directory: ../src
    arguments: [--dta, "x"]
    permanent_exit_codes: [2]
  flaky:
    script: flaky.py
    source_directory: ../src
    permanent_exit_codes: [2]
    outputs: {out: {}}
"""

CLI = """
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
args = parser.parse_args()
print("data at", args.data)
"""

# attempt 1 fails with EX_TEMPFAIL (75, not marked permanent: a retry may help), attempt 2 succeeds
FLAKY = """
import sys

from airflow_mlpipe.runtime import context

if context.attempt == 1:
    print("attempt 1: the service is busy, try again later", flush=True)
    sys.exit(75)
(context.outputs["out"] / "done.txt").write_text("ok")
context.log_metric("attempt", context.attempt)
"""

HANDWRITTEN = """
import datetime

from airflow.sdk import DAG

from airflow_mlpipe.operators.step import MlpipeStepOperator

with DAG(dag_id="missing_script", schedule=None, start_date=datetime.datetime(2026, 1, 1),
         default_args={"retries": 3}) as dag:
    MlpipeStepOperator(task_id="train", script="trian.py", source_directory=SRC,
                       environment={"python": "python3"})
"""


def test_permanent_failures_fail_in_the_first_try_and_transient_ones_are_retried(airflow_db, tmp_path,
                                                                                  monkeypatch, capfd):
    dags = make_dags_folder(tmp_path / "dags", {"fail_fast": PIPELINE}, {"src/cli.py": CLI, "src/flaky.py": FLAKY})
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, dags, target)

    result = run(load(dags, "fail_fast"))
    out = capfd.readouterr()
    log = out.out + out.err

    assert result.states == {"unknown_input": "failed", "usage_error": "failed", "flaky": "success"}
    assert result.tries == {"unknown_input": 1, "usage_error": 1, "flaky": 2}
    # what to change, and that no retry follows
    assert "dataset 'incme_raw' is not registered" in log
    assert "Change input 'data'" in log and "mlpipe datasets register" in log
    assert "exited with code 2. Exit code 2 is in permanent_exit_codes [2]" in log
    assert "unrecognized arguments: --dta" in log or "the following arguments are required: --data" in log
    assert log.count("not retried") >= 2
    assert result.xcoms["flaky"]["metrics"] == {"attempt": 2}

    ws = target.open()
    record = ws.runs.get_run("fail_fast", result.run_id)["steps"]
    assert record["usage_error"]["status"] == "failed" and record["usage_error"]["attempt"] == 1
    assert record["flaky"]["status"] == "succeeded" and record["flaky"]["attempt"] == 2


def test_a_missing_script_fails_in_the_first_try(airflow_db, tmp_path, monkeypatch, capfd):
    """A hand-written DAG (no YAML validation in front): the operator itself refuses, before any process."""
    from airflow.dag_processing.dagbag import DagBag

    dags = tmp_path / "dags"
    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text("print('training')\n")
    dags.mkdir()
    (dags / "missing_script.py").write_text(f"SRC = {str(src)!r}\n" + dedent(HANDWRITTEN))
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, dags, target)
    bag = DagBag(dag_folder=str(dags), safe_mode=False)
    assert not bag.import_errors, bag.import_errors

    result = run(bag.dags["missing_script"])
    log = "".join(capfd.readouterr())

    assert result.states == {"train": "failed"}
    assert result.tries == {"train": 1}
    assert "script 'trian.py' is not in its source directory" in log
    assert "python files there: train.py" in log and "Fix the step's script or source_directory" in log
    assert "not retried" in log
