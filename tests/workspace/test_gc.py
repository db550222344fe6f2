from __future__ import annotations

import time

from airflow_mlpipe.errors import WorkspaceError
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


# ------------------------------------------------------------------------------ safety (local and S3)


def _old_workspace_state(workspace, tmp_path):
    """Outputs of every kind gc must keep, and two it may collect; -> ({prefix: why kept}, [collectable])."""
    ds = workspace.datastore
    keep = {}
    reg, _ = output(workspace, tmp_path, "reg", content="registered dataset")
    workspace.datasets.register("table", reg, producing_run={"pipeline": "p", "run_id": "reg", "step": "train",
                                                             "output": "model"})
    keep[reg] = "produced dataset table:1"
    by_key, by_key_manifest = output(workspace, tmp_path, "mkey", content="entry of a model version")
    superseded = {"step": {"script": "m.py"}, "params": {"v": 0}}
    workspace.cache.commit(cache_key(superseded), "p", "m", superseded,
                           {"model": {"key": by_key, "digest": by_key_manifest["digest"]}})
    mv = workspace.models.register("clf", tmp_path / "reg-train-model", producing_run={"cache_key": cache_key(superseded)})
    keep[by_key] = "produced model clf:1"
    aliased, _ = output(workspace, tmp_path, "alias", content="named in an alias history")
    workspace.models.set_alias("clf", "production", mv.version, reason={"evaluated_on": aliased})
    workspace.models.set_alias("clf", "production", mv.version, reason={"by": "a later move"})
    keep[aliased] = "named in the history of model alias clf@production"
    live, live_manifest = output(workspace, tmp_path, "live", content="live cache entry")
    latest = {"step": {"script": "m.py"}, "params": {"v": 1}}  # supersedes `superseded` as p/m's latest
    workspace.cache.commit(cache_key(latest), "p", "m", latest, {"model": {"key": live, "digest": live_manifest["digest"]}})
    keep[live] = "live cache entry of p/m"
    upstream, _ = output(workspace, tmp_path, "busy", step="prep", content="read by a running step")
    workspace.runs.write_step("p", "busy", "prep", {"status": "succeeded", "outputs": {"model": {"key": upstream}}})
    workspace.runs.write_step("p", "busy", "train", {"status": "running"})
    keep[upstream] = "run p/busy is still running (step train)"
    dead = []
    for i in range(4):  # superseded entries of another step, each with its own output, the last one live
        prefix, manifest = output(workspace, tmp_path, f"old{i}", step="fit", content=f"superseded {i}")
        comps = {"step": {"script": "fit.py"}, "params": {"i": i}}
        workspace.cache.commit(cache_key(comps), "p", "fit", comps, {"model": {"key": prefix, "digest": manifest["digest"]}})
        if i < 3:
            dead.append(prefix)
        else:
            keep[prefix] = "live cache entry of p/fit"
    loose, _ = output(workspace, tmp_path, "loose", content="unreferenced")
    ds.write_bytes("outputs/p/torn/train/model/part-0", b"a writer died here")
    return keep, sorted([*dead, loose, "outputs/p/torn/train/model"])


def _consistent(workspace):
    """Every cache entry left names outputs that still hold what it recorded."""
    for key in workspace.cache.entry_keys():
        assert workspace.cache.lookup(key) is not None, f"cache entry {key} names a deleted output"


def test_gc_never_deletes_what_is_referenced(workspace, tmp_path):
    keep, collectable = _old_workspace_state(workspace, tmp_path)
    later = time.time() + 30 * DAY
    dry = collect_garbage(workspace.datastore, older_than_days=7, now=later)
    assert dry.prefixes == collectable
    reasons = {item["prefix"]: item["reason"] for item in dry.kept}
    assert {prefix: reasons.get(prefix) for prefix in keep} == keep
    assert len(dry.entries_removed) == 3  # the superseded entries of p/fit (would be) removed
    kinds = {row["kind"]: row["items"] for row in dry.by_kind()}
    assert kinds["collected output"] == len(collectable) and kinds["kept: running run"] == 1
    assert dry.largest(2) == sorted(dry.collected, key=lambda i: (-i["bytes"], i["prefix"]))[:2]
    assert "largest" in dry.summary() and dry.seconds > 0

    real = collect_garbage(workspace.datastore, older_than_days=7, dry_run=False, now=later)
    assert real.prefixes == collectable and real.entries_removed == dry.entries_removed
    for prefix in keep:
        assert workspace.read_manifest(prefix) is not None, prefix
    for prefix in collectable:
        assert list(workspace.datastore.list(prefix)) == []
    _consistent(workspace)
    assert collect_garbage(workspace.datastore, older_than_days=7, dry_run=False, now=later).collected == []


class _Interrupted(WorkspaceError):
    pass


class _FailsAfter:
    """Mixed into the workspace's own datastore class: deletes for real, then fails after ``budget`` deletes."""

    budget = 0  # set on the (test's own) class

    def _spend(self, count: int = 1) -> int:
        allowed = max(0, min(count, type(self).budget))
        type(self).budget -= count
        return allowed

    def delete(self, key):
        if not self._spend():
            raise _Interrupted(f"injected failure before deleting {key}")
        return super().delete(key)

    def delete_prefix(self, prefix):
        if not self._spend():
            raise _Interrupted(f"injected failure before deleting {prefix}")
        return super().delete_prefix(prefix)


class _BulkFailsAfter(_FailsAfter):
    """The same, for a datastore with a bulk delete (S3: gc uses it)."""

    def delete_keys(self, keys):
        keys = list(keys)
        allowed = self._spend(len(keys))
        super().delete_keys(keys[:allowed])
        if allowed < len(keys):
            raise _Interrupted(f"injected failure after deleting {allowed} of {len(keys)} objects")
        return len(keys)


def test_an_interrupted_gc_leaves_a_consistent_workspace(workspace, tmp_path):
    keep, collectable = _old_workspace_state(workspace, tmp_path)
    later = time.time() + 30 * DAY
    real = workspace.datastore  # the same datastore (same folder or bucket, same client) with failing deletes
    failing_class = type("Failing" + type(real).__name__, (_BulkFailsAfter if hasattr(real, "delete_keys") else _FailsAfter, type(real)), {})
    failing = failing_class.__new__(failing_class)
    failing.__dict__.update(real.__dict__)
    for budget in range(0, 12, 2):  # fail at every stage: entries, outputs, within the bulk deletes
        type(failing).budget = budget
        try:
            collect_garbage(failing, older_than_days=7, dry_run=False, now=later)
        except _Interrupted:
            pass
        _consistent(workspace)
        for prefix in keep:
            assert workspace.read_manifest(prefix) is not None, prefix
    done = collect_garbage(workspace.datastore, older_than_days=7, dry_run=False, now=later)
    assert set(done.prefixes) <= set(collectable)
    for prefix in collectable:
        assert list(workspace.datastore.list(prefix)) == []
    _consistent(workspace)
    assert workspace.cache.entry_keys() and collect_garbage(workspace.datastore, 7, dry_run=False, now=later).collected == []
