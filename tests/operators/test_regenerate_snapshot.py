"""``regenerate_outputs`` runs the code as it is on disk now (DESIGN.md section 5: "forces recomputation
(and rehashes)"), even after an edit that keeps the file's size and mtime, and even when the file-hash
cache holds a wrong entry that matches the file's stat fingerprint.

Real Airflow (``dag.test()``), a real step subprocess on the local compute target, a local workspace.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.operators.kit import activate, load, make_dags_folder, run

PIPELINE = """
pipeline: regen_snapshot
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 0}
compute:
  local: {type: local}
environments:
  plain: {python: python3, requirements: []}
steps:
  emit:
    script: emit.py
    source_directory: ../src/emit
    arguments: [--out, "${outputs.out}"]
    outputs: {out: {}}
"""

SCRIPT = """
import argparse
import pathlib

VALUE = "v1"
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()
(args.out / "value.txt").write_text(VALUE)
"""


def rewrite_keeping_stat(path, old: str, new: str) -> None:
    """Same-size edit with the mtime set back, as timestamp-preserving tools (rsync -t, cp -p) leave it."""
    before = os.stat(path)
    text = path.read_text()
    assert len(old) == len(new) and text.count(old) == 1
    path.write_text(text.replace(old, new))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def output_value(ws, result) -> str:
    key = result.xcoms["emit"]["outputs"]["out"]["key"]
    return ws.datastore.read_bytes(f"{key}/value.txt").decode()


@pytest.mark.timeout(300)
def test_regenerate_runs_the_code_on_disk(airflow_db, local_workspace, tmp_path, monkeypatch):
    from airflow_mlpipe.workspace import snapshot as snapmod

    dags = make_dags_folder(tmp_path / "dags", {"regen_snapshot": PIPELINE}, {"src/emit/emit.py": SCRIPT})
    activate(monkeypatch, dags, local_workspace)
    monkeypatch.setenv("MLPIPE_CACHE_DIR", str(tmp_path / "mlpipe-cache"))
    ws = local_workspace.open()
    script = dags / "src" / "emit" / "emit.py"
    old = time.time_ns() - 3600 * 10**9  # an hour old: the hash cache keeps it (not racily clean)
    os.utime(script, ns=(old, old))

    first = run(load(dags, "regen_snapshot"))
    assert first.state == "success", first.states
    assert output_value(ws, first) == "v1"

    # 1. same size, same mtime: the new code runs
    rewrite_keeping_stat(script, '"v1"', '"v2"')
    second = run(load(dags, "regen_snapshot"), {"regenerate_outputs": True})
    assert second.state == "success", second.states
    assert second.reused() == {"emit": False}
    assert output_value(ws, second) == "v2"

    # 2. a hash-cache entry that matches the file's stat but names the old content (a cache that cannot
    #    see the edit, e.g. on a filesystem without a reliable ctime): regenerate_outputs does not trust it
    rewrite_keeping_stat(script, '"v2"', '"v3"')
    stale = snapmod._StatCache(snapmod.default_cache_dir(), script.parent)
    first_snapshot = ws.runs.get_run("regen_snapshot", first.run_id)["steps"]["emit"]["snapshot"]["sha256"]
    v1_sha = snapmod.read_snapshot_files(ws.datastore, first_snapshot)["emit.py"]["sha256"]
    stale.entries["emit.py"] = [*snapmod._fingerprint(os.stat(script)), v1_sha]
    stale.dirty = True
    stale.save({"emit.py"})
    third = run(load(dags, "regen_snapshot"), {"regenerate_outputs": True})
    assert third.state == "success", third.states
    assert output_value(ws, third) == "v3"
