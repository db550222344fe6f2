from __future__ import annotations

import time

from airflow_mlpipe.workspace.cache import cache_key
from airflow_mlpipe.workspace.gc import collect_garbage
from airflow_mlpipe.workspace.manifest import commit_output

from .conftest import make_tree

DAY = 86400.0


def output(workspace, tmp_path, run, step="train", name="model", content="x"):
    out = make_tree(tmp_path / f"{run}-{step}-{name}", {"f.bin": content})
    prefix = f"outputs/p/{run}/{step}/{name}"
    return prefix, commit_output(workspace.datastore, out, prefix)


def test_gc_dry_run_then_real(workspace, tmp_path):
    ds = workspace.datastore
    old_prefix, _ = output(workspace, tmp_path, "r1", content="old, unreferenced")
    reg_prefix, _ = output(workspace, tmp_path, "r2", content="registered")
    live_prefix, live_manifest = output(workspace, tmp_path, "r3", content="live cache")
    dead_prefix, dead_manifest = output(workspace, tmp_path, "r4", content="superseded cache")
    by_entry_prefix, by_entry_manifest = output(workspace, tmp_path, "r5", step="prep", content="entry of a version")
    ds.write_bytes("outputs/p/r6/train/half/part-0", b"half written, no manifest")
    version = workspace.datasets.register("ds", reg_prefix, producing_run={"run_id": "r2", "key": reg_prefix})
    dead = {"step": {"script": "t.py"}, "params": {"v": 1}}
    workspace.cache.commit(cache_key(dead), "p", "train", dead, {"model": {"key": dead_prefix, "digest": dead_manifest["digest"]}})
    live = {"step": {"script": "t.py"}, "params": {"v": 2}}  # supersedes `dead` as the latest of p/train
    workspace.cache.commit(cache_key(live), "p", "train", live, {"model": {"key": live_prefix, "digest": live_manifest["digest"]}})
    prep = {"step": {"script": "prep.py"}, "params": {"v": 0}}
    workspace.cache.commit(cache_key(prep), "p", "prep", prep, {"model": {"key": by_entry_prefix, "digest": by_entry_manifest["digest"]}})
    prep2 = {"step": {"script": "prep.py"}, "params": {"v": 9}}  # prep's latest now points elsewhere
    p2_prefix, p2_manifest = output(workspace, tmp_path, "r7", step="prep", content="prep latest")
    workspace.cache.commit(cache_key(prep2), "p", "prep", prep2, {"model": {"key": p2_prefix, "digest": p2_manifest["digest"]}})
    workspace.models.register("m", tmp_path / "r1-train-model", producing_run={"cache_key": cache_key(prep)})

    assert collect_garbage(ds, older_than_days=7).collected == []  # nothing is old yet
    later = time.time() + 30 * DAY
    dry = collect_garbage(ds, older_than_days=7, now=later)
    expected = sorted([old_prefix, dead_prefix, "outputs/p/r6/train/half"])
    assert dry.dry_run and sorted(dry.prefixes) == expected and dry.bytes > 0
    assert "would delete 3 output(s)" in dry.summary()
    assert ds.exists(f"{old_prefix}/f.bin")  # dry run deletes nothing
    kept = {item["prefix"]: item["reason"] for item in dry.kept}
    assert kept[reg_prefix] == "produced dataset ds:1"
    assert kept[live_prefix] == "live cache entry of p/train"
    assert kept[by_entry_prefix] == "produced model m:1"

    real = collect_garbage(ds, older_than_days=7, dry_run=False, now=later)
    assert sorted(real.prefixes) == expected
    assert real.entries_removed == [cache_key(dead)]
    assert list(ds.list(old_prefix)) == [] and list(ds.list("outputs/p/r6")) == []
    assert ds.exists(f"{reg_prefix}/f.bin") and ds.exists(f"{live_prefix}/f.bin")
    assert workspace.cache.lookup(cache_key(live)) is not None
    # registered content is never touched
    assert ds.exists(f"{version.key}/f.bin") and ds.exists(f"{version.key}/_manifest.json")
    assert workspace.models.get("m", 1).key.startswith("models/m/data/")
    assert collect_garbage(ds, older_than_days=7, dry_run=False, now=later).collected == []
