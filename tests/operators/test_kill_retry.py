"""A step SIGKILLed after writing part of its output leaves no manifest (so no output that looks
complete and no cache entry), and Airflow's retry of the task succeeds.

The script, on attempt 1, writes a big part file and a truncated JSON into its output directory, then
kills its own process with SIGKILL. On attempt 2 it first looks at the workspace destination of its
output and logs, as a metric, whether a manifest (or any file) was left there by attempt 1; then it writes
the complete output. The DAG runs under ``dag.test()`` with ``retries: 1`` (the suite sets a 1 s retry
delay)."""

from __future__ import annotations

from tests.operators.kit import activate, load, local_target, make_dags_folder, run

PIPELINE = """
pipeline: kill_retry
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 1}
compute:
  local: {type: local}
environments:
  plain: {python: python3}
steps:
  flaky:
    script: flaky.py
    source_directory: ../src
    arguments: [--out, "${outputs.model}"]
    outputs:
      model: {register_as: flaky_model}
"""

SCRIPT = """
import argparse
import json
import os
import pathlib
import signal
import urllib.parse

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()
if context.attempt == 1:
    (args.out / "part-0.bin").write_bytes(b"x" * 1_000_000)
    with open(args.out / "weights.json", "w") as fh:
        fh.write('{"weights": [0.1, 0.2')
        fh.flush()
        os.fsync(fh.fileno())
        print("attempt 1: partial output written, killing myself", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
destination = pathlib.Path(urllib.parse.urlparse(context.workspace).path) / json.loads(
    os.environ["MLPIPE_CONTEXT"])["outputs"]["model"]["key"]
context.log_metric("manifest_left_by_attempt_1", int((destination / "_manifest.json").exists()))
context.log_metric("files_left_by_attempt_1", len(list(destination.glob("*"))) if destination.exists() else 0)
(args.out / "weights.json").write_text(json.dumps({"weights": [0.1, 0.2, 0.3]}))
context.log_metric("attempt", context.attempt)
"""


def test_sigkilled_step_leaves_no_manifest_and_retry_succeeds(airflow_db, tmp_path, monkeypatch):
    dags = make_dags_folder(tmp_path / "dags", {"kill_retry": PIPELINE}, {"src/flaky.py": SCRIPT})
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, dags, target)
    ws = target.open()

    result = run(load(dags, "kill_retry"))
    assert result.states == {"flaky": "success"}
    assert result.tries == {"flaky": 2}
    xcom = result.xcoms["flaky"]
    assert xcom["reused"] is False
    assert xcom["metrics"] == {"manifest_left_by_attempt_1": 0, "files_left_by_attempt_1": 0, "attempt": 2}

    # attempt 1 left no successful result; the committed output is attempt 2's, complete
    first = ws.runs.read_result("kill_retry", result.run_id, "flaky", 1)
    assert first is None or first.get("status") != "succeeded"
    assert ws.runs.read_result("kill_retry", result.run_id, "flaky", 2)["status"] == "succeeded"
    key = xcom["outputs"]["model"]["key"]
    manifest = ws.read_manifest(key)
    assert set(manifest["files"]) == {"weights.json"}
    assert ws.datastore.read_bytes(f"{key}/weights.json") == b'{"weights": [0.1, 0.2, 0.3]}'
    record = ws.runs.get_run("kill_retry", result.run_id)["steps"]["flaky"]
    assert record["status"] == "succeeded" and record["attempt"] == 2

    # exactly one cache entry and one dataset version: the killed attempt committed neither
    entries = [o.key for o in ws.datastore.list("cache/entries/")]
    assert entries == [f"cache/entries/{xcom['cache_key']}.json"]
    assert ws.datasets.version_numbers("flaky_model") == [1]
    assert ws.datasets.get("flaky_model", 1).digest == manifest["digest"]
