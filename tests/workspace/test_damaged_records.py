"""A damaged record does not spread (DESIGN.md section 5): a corrupt cache entry is a miss (reported and set
aside), a corrupt run record is reported as damaged while every other run is still listed."""

from __future__ import annotations

import pytest

from airflow_mlpipe.workspace.cache import cache_key
from airflow_mlpipe.workspace.manifest import commit_output
from airflow_mlpipe.workspace.runs import DamagedRecordError

from .conftest import make_tree

DAMAGE = {
    "truncated": b'{"key": "abc", "outputs": {"model": {"key": "outputs/p',
    "empty": b"",
    "not a record": b'["a", "list"]',
    "wrong shapes": b'{"key": 1, "outputs": "model", "components": 7, "metrics": []}',
    "binary": b"\x00\xff\xfe garbage",
}


def _entry(workspace, tmp_path):
    out = make_tree(tmp_path / "model", {"w.txt": "weights"})
    manifest = commit_output(workspace.datastore, out, "outputs/p/r1/train/model")
    components = {"step": {"script": "t.py"}, "params": {"v": 1}}
    key = cache_key(components)
    workspace.cache.commit(key, "p", "train", components,
                           {"model": {"key": "outputs/p/r1/train/model", "digest": manifest["digest"]}})
    return key, components


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cache_entry_is_a_miss_and_set_aside(workspace, tmp_path, damage):
    key, components = _entry(workspace, tmp_path)
    workspace.datastore.write_bytes(f"cache/entries/{key}.json", DAMAGE[damage])
    assert workspace.cache.lookup(key) is None  # a miss, not an exception
    assert not workspace.datastore.exists(f"cache/entries/{key}.json")  # set aside...
    aside = [o.key for o in workspace.datastore.list("cache/damaged")]
    assert len(aside) == 1 and aside[0].startswith(f"cache/damaged/{key}")  # ...where a person can look
    assert workspace.datastore.read_bytes(aside[0]) == DAMAGE[damage]
    reasons = workspace.cache.explain("p", "train", components)
    assert any("damaged" in r for r in reasons), reasons
    # the step runs again and commits a fresh entry under the same key: reuse works again
    _entry(workspace, tmp_path)
    assert workspace.cache.lookup(key) is not None


def test_a_damaged_latest_pointer_is_no_previous_run(workspace, tmp_path):
    _, components = _entry(workspace, tmp_path)
    workspace.datastore.write_bytes("cache/latest/p/train.json", b"{oops")
    assert workspace.cache.latest("p", "train") is None
    assert workspace.cache.explain("p", "train", components) == ["no previous run of this step"]


@pytest.mark.parametrize("damage", ["truncated", "not a record", "binary"])
def test_a_damaged_run_record_is_reported_and_the_others_listed(workspace, damage):
    runs = workspace.runs
    for i in range(3):
        runs.write_run("p", f"run{i}", {"started": f"2026-01-0{i + 1}T00:00:00Z"})
        runs.write_step("p", f"run{i}", "train", {"status": "succeeded"})
    workspace.datastore.write_bytes("runs/p/run1/run.json", DAMAGE[damage])
    workspace.datastore.write_bytes("runs/p/run2/steps/train.json", DAMAGE[damage])

    listed = runs.list_runs("p")
    assert sorted(r["run_id"] for r in listed) == ["run0", "run1", "run2"]
    damaged = [r for r in listed if r.get("damaged")]
    assert [r["run_id"] for r in damaged] == ["run1"]
    with pytest.raises(DamagedRecordError, match="run1.*damaged"):
        runs.get_run("p", "run1")
    assert runs.get_run("p", "run2")["steps"]["train"]["status"] == "damaged"
    assert runs.get_step("p", "run2", "train") is None  # a damaged step record is never trusted
    assert runs.get_run("p", "run0")["steps"]["train"]["status"] == "succeeded"
