"""Every Airflow run maps to its own workspace folder (DESIGN.md section 5): the run-id -> folder mapping is
injective, and a collision that could still happen (a hash collision, or a folder written by an older
mapping) is refused loudly instead of letting one run read another's data."""

from __future__ import annotations

import itertools

import pytest

from airflow_mlpipe.errors import ConflictError
from airflow_mlpipe.workspace.runs import output_prefix, run_prefix, safe_id

# Pairs that the old mapping (every unsafe character -> '_') sent to one folder.
TRICKY = [
    "manual__2026-01-02T03:04:05+00:00",
    "manual__2026-01-02T03_04_05_00_00",
    "manual__2026-01-02T03:04:05_00:00",
    "r:1", "r_1", "r+1", "r~1", "r 1", "r/1", "r\\1", "r%1", "r\u00e91", "r\u00e81",
    "scheduled__2026-01-01T00:00:00+00:00", "scheduled__2026-01-01T00:00:00-00:00",
    "x" * 300, "x" * 299 + ":", "x" * 299 + "_",
]


def test_run_id_mapping_is_injective():
    folders = {rid: safe_id(rid) for rid in TRICKY}
    assert len(set(folders.values())) == len(TRICKY), folders
    for a, b in itertools.combinations(TRICKY, 2):
        assert output_prefix("p", a, "s", "o") != output_prefix("p", b, "s", "o")


def test_run_id_mapping_is_a_safe_readable_segment():
    for rid in TRICKY:
        folder = safe_id(rid)
        assert folder not in (".", "..") and "/" not in folder and len(folder) <= 128
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in folder), folder
    # ids that need no escaping stay as they are: folders people can read
    assert safe_id("r_1") == "r_1"
    assert safe_id("manual__2026-01-02") == "manual__2026-01-02"
    assert safe_id("manual__2026-01-02T03:04:05+00:00").startswith("manual__2026-01-02T03_04_05_00_00")


def test_a_second_run_id_on_one_folder_is_refused(workspace):
    """If two run ids still reach one folder (a folder written by the old mapping, a hash collision), the
    second run is refused with both ids named, before it reads or writes anything there."""
    runs = workspace.runs
    assert runs.open_run("p", "r_1", {"params": {}}) is True
    assert runs.open_run("p", "r_1", {"params": {}}) is False  # the same run again: fine
    # forge what an old workspace holds: run "r:1" recorded in the folder of "r_1"
    key = f"{run_prefix('p', 'r:1')}/run.json"
    workspace.datastore.put_json(key, {"pipeline": "p", "run_id": "r;1"})
    with pytest.raises(ConflictError, match=r"r:1.*r;1|r;1.*r:1"):
        runs.open_run("p", "r:1", {"params": {}})
