from __future__ import annotations

import re
import threading

import pytest

from airflow_mlpipe.errors import NotFoundError
from airflow_mlpipe.workspace.runs import attempt_prefix, output_prefix, safe_id


def test_safe_id():
    # readable, then a hash of the original id (tests/workspace/test_run_isolation.py: injective)
    assert safe_id("manual__2026-01-02T03:04:05.123+00:00").startswith("manual__2026-01-02T03_04_05.123_00_00-x")
    assert safe_id("a/b c").startswith("a_b_c-x")
    assert safe_id("plain_id-1.2") == "plain_id-1.2"
    for bad in ("", "..", "."):
        with pytest.raises(ValueError):
            safe_id(bad)
    for bad in (".", "..", "step\n", "a/b", ""):  # a name in a key is one plain path segment
        with pytest.raises(ValueError):
            output_prefix("p", "r1", bad, "model")
    folder = safe_id("r:1")
    assert output_prefix("p", "r:1", "train", "model") == f"outputs/p/{folder}/train/model"
    assert attempt_prefix("p", "r:1", "train", 2) == f"runs/p/{folder}/steps/train/attempt-2"


def test_run_records(workspace):
    runs = workspace.runs
    rid = "manual__2026-01-01T00:00:00+00:00"
    runs.write_run("income", rid, {"params": {"lr": 0.1}, "started": "2026-01-01T00:00:00Z"})
    runs.write_step("income", rid, "prep", {"status": "succeeded", "reused": False})
    runs.write_step("income", rid, "train", {"status": "running"})
    workspace.datastore.put_json(f"{attempt_prefix('income', rid, 'train', 1)}/result.json", {"status": "succeeded"})
    runs.update_run("income", rid, {"state": "success"})
    run = runs.get_run("income", rid)
    assert run["run_id"] == rid and run["pipeline"] == "income" and run["state"] == "success"
    assert run["params"] == {"lr": 0.1} and sorted(run["steps"]) == ["prep", "train"]
    assert run["steps"]["prep"]["status"] == "succeeded"
    assert runs.read_result("income", rid, "train", 1) == {"status": "succeeded"}
    assert runs.find_run(rid)["pipeline"] == "income"
    with pytest.raises(NotFoundError):
        runs.get_run("income", "nope")
    with pytest.raises(NotFoundError):
        runs.find_run("nope")


def test_list_runs_newest_first(workspace):
    for i, pipeline in enumerate(["a", "b", "a", "b", "a"]):
        workspace.runs.write_run(pipeline, f"run{i}", {"started": f"2026-01-0{i + 1}T00:00:00Z"})
    assert [r["run_id"] for r in workspace.runs.list_runs()] == ["run4", "run3", "run2", "run1", "run0"]
    assert [r["run_id"] for r in workspace.runs.list_runs("a", limit=2)] == ["run4", "run2"]
    assert workspace.runs.list_runs("zzz") == []


def test_concurrent_update_run(workspace):
    workspace.runs.write_run("p", "r", {})
    barrier = threading.Barrier(6)

    def update(i):
        barrier.wait()
        workspace.runs.update_run("p", "r", {f"k{i}": i})

    threads = [threading.Thread(target=update, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = workspace.runs.get_run("p", "r")
    assert all(run[f"k{i}"] == i for i in range(6))


def test_output_key_fills_the_destination_template_with_checked_names():
    from airflow_mlpipe.rules import DEFAULT_DESTINATION
    from airflow_mlpipe.workspace.runs import output_key

    assert output_key(DEFAULT_DESTINATION, "p", "r:1", "train", "model") == output_prefix("p", "r:1", "train", "model")
    assert output_key("models/{pipeline}/./{output}//latest", "p", "r1", "s", "m") == "models/p/m/latest"
    for template, reason in [("x/{date}", "use only the placeholders"), ("x/{", "use only the placeholders"),
                             ("../{output}", "invalid datastore key")]:
        with pytest.raises(ValueError, match=re.escape(reason)):
            output_key(template, "p", "r1", "s", "m")
    with pytest.raises(ValueError):
        output_key(DEFAULT_DESTINATION, "p", "r1", "../s", "m")  # a name is one segment
