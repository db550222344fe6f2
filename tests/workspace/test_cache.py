from __future__ import annotations

import hashlib
import json

import pytest

from airflow_mlpipe.errors import WorkspaceError
from airflow_mlpipe.workspace.cache import cache_key
from airflow_mlpipe.workspace.manifest import commit_output
from airflow_mlpipe.workspace.snapshot import snapshot_source

from .conftest import make_tree, overwrite_in_place


def components(snapshot="a" * 64, lr=0.1, data="1" * 64, env="e1", argv=("--lr", "${params.lr}")):
    return {
        "step": {"script": "train.py", "argv": list(argv), "inputs": ["data"], "outputs": ["model"]},
        "snapshot": snapshot,
        "environment": env,
        "params": {"learning_rate": lr},
        "inputs": {"data": data},
    }


def test_cache_key_is_canonical():
    comp = components()
    expected = hashlib.sha256(json.dumps(comp, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert cache_key(comp) == expected
    assert cache_key(dict(reversed(list(comp.items())))) == expected
    assert cache_key(components(lr=0.2)) != expected
    with pytest.raises(ValueError):
        cache_key({"x": float("nan")})


def commit_model(workspace, tmp_path, run="r1", content="w=1"):
    out = make_tree(tmp_path / f"out-{run}", {"model.txt": content})
    prefix = f"outputs/p/{run}/train/model"
    manifest = commit_output(workspace.datastore, out, prefix)
    return {"model": {"key": prefix, "digest": manifest["digest"], "size": manifest["size"]}}


def test_commit_and_lookup(workspace, tmp_path):
    comp = components()
    key = cache_key(comp)
    assert workspace.cache.lookup(key) is None
    outputs = commit_model(workspace, tmp_path)
    entry = workspace.cache.commit(key, "p", "train", comp, outputs, metrics={"acc": 0.9}, run={"run_id": "r1"})
    hit = workspace.cache.lookup(key)
    assert hit == entry and hit.outputs == outputs and hit.metrics == {"acc": 0.9} and hit.run["run_id"] == "r1"
    assert workspace.cache.live_keys() == {key}
    assert workspace.cache.explain("p", "train", comp) == []


def test_lookup_rejects_deleted_or_changed_output(workspace, tmp_path):
    comp = components()
    key = cache_key(comp)
    outputs = commit_model(workspace, tmp_path)
    workspace.cache.commit(key, "p", "train", comp, outputs)
    workspace.datastore.delete("outputs/p/r1/train/model/_manifest.json")
    assert workspace.cache.lookup(key) is None
    assert workspace.cache.explain("p", "train", comp) == [
        f"output model: it was deleted (no _manifest.json at {workspace.datastore.uri_for('outputs/p/r1/train/model')})"]
    commit_model(workspace, tmp_path, content="w=other")  # same prefix, other content
    assert workspace.cache.lookup(key) is None


def test_commit_requires_committed_outputs(workspace):
    comp = components()
    with pytest.raises(WorkspaceError, match="not committed"):
        workspace.cache.commit(cache_key(comp), "p", "train", comp, {"model": {"key": "outputs/none", "digest": "0" * 64}})
    with pytest.raises(ValueError, match="does not match"):
        workspace.cache.commit("0" * 64, "p", "train", comp, {})
    with pytest.raises(ValueError):
        workspace.cache.lookup("../../etc")


def test_explain_reasons(workspace, tmp_path):
    assert workspace.cache.explain("p", "train", components()) == ["no previous run of this step"]
    src = make_tree(tmp_path / "src", {"train.py": "v1", "src/util.py": "u1", "old.py": "o"})
    snap1 = snapshot_source(workspace.datastore, src, git=False)
    before = components(snapshot=snap1.sha256)
    workspace.cache.commit(cache_key(before), "p", "train", before, commit_model(workspace, tmp_path))
    (src / "train.py").write_text("v2")
    (src / "src/util.py").write_text("u2")
    (src / "old.py").unlink()
    (src / "new.py").write_text("n")
    snap2 = snapshot_source(workspace.datastore, src, git=False)
    after = components(snapshot=snap2.sha256, lr=0.2, data="2" * 64, env="e2", argv=("--lr", "${params.lr}", "-v"))
    after["params"]["epochs"] = 3
    reasons = workspace.cache.explain("p", "train", after)
    assert reasons == [
        "arguments: ['--lr', '${params.lr}'] -> ['--lr', '${params.lr}', '-v']",
        "file new.py was added to the snapshot",
        "file old.py was removed from the snapshot",
        "file src/util.py of the snapshot changed",
        "script train.py changed",
        "environment changed",
        "param epochs added (= 3)",
        "param learning_rate: 0.1 -> 0.2",
        f"input data: digest {'1' * 12} -> {'2' * 12}",
    ]
    unknown = components(snapshot="b" * 64)
    assert workspace.cache.explain("p", "train", unknown) == [f"source snapshot changed: {snap1.sha256[:12]} -> {'b' * 12}"]
    inline = components(snapshot={"sha256": "c" * 64, "files": {"train.py": "x"}})
    assert "file src/util.py was removed from the snapshot" in workspace.cache.explain("p", "train", inline)


def identity_components(name="train", python="/usr/bin/python3.11", version="3.11.2", packages=("six==1.16.0",),
                        env=None, image=None, compute=None, runtime=("0.1.0", "b" * 64)):
    comp = components()
    comp["step"] = {"name": name, **comp["step"]}
    environment = {"python": python, "python_version": version, "packages": list(packages),
                   "env": env if env is not None else {"FOO": "f1", "TOKEN": "t1"}}
    if image:
        environment = {"image": image[0], "image_id": image[1], "python": "python3", "env": environment["env"]}
    comp["environment"] = environment
    comp["compute"] = compute or {"type": "local", "inherit_env": []}
    comp["runtime"] = {"airflow_mlpipe": runtime[0], "bundle": runtime[1]}
    return comp


def test_explain_names_each_identity_component(workspace, tmp_path):
    """Every component of the key says what changed in it; env variables by name only (values may be
    secrets and are digests in the key anyway)."""
    before = identity_components()
    workspace.cache.commit(cache_key(before), "p", "train", before, commit_model(workspace, tmp_path))
    assert workspace.cache.explain("p", "train", before) == []
    after = identity_components(python="/usr/local/bin/python3.11", version="3.11.7",
                                packages=("six==1.17.0", "attrs==24.2.0"), env={"FOO": "f2", "NEW": "n"},
                                compute={"type": "local", "inherit_env": ["OMP_NUM_THREADS"]},
                                runtime=("0.2.0", "c" * 64))
    assert workspace.cache.explain("p", "train", after) == [
        "environment: interpreter /usr/bin/python3.11 -> /usr/local/bin/python3.11",
        "environment: python 3.11.2 -> 3.11.7",
        "environment: package attrs 24.2.0 added",
        "environment: package six 1.16.0 -> 1.17.0",
        "env FOO changed",
        "env NEW added",
        "env TOKEN removed",
        'compute: inherit_env [] -> ["OMP_NUM_THREADS"]',
        "runtime: airflow_mlpipe 0.1.0 -> 0.2.0",
        f"runtime: bundle {'b' * 12} -> {'c' * 12}",
    ]
    assert not any("f2" in reason or "t1" in reason for reason in workspace.cache.explain("p", "train", after))


def test_explain_names_a_moved_image_tag_and_a_changed_reference(workspace, tmp_path):
    image_a, image_b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    before = identity_components(image=("localhost/x:latest", image_a), compute={"type": "docker", "user": None})
    workspace.cache.commit(cache_key(before), "p", "train", before, commit_model(workspace, tmp_path))
    moved = identity_components(image=("localhost/x:latest", image_b), compute={"type": "docker", "user": "1000"})
    assert workspace.cache.explain("p", "train", moved) == [
        f"image localhost/x:latest changed: {image_a[:19]} -> {image_b[:19]}",
        "compute: user null -> 1000",
    ]
    other = identity_components(image=("localhost/x:2", image_b), compute={"type": "docker", "user": None})
    assert workspace.cache.explain("p", "train", other) == ["image localhost/x:latest -> localhost/x:2"]


def test_explain_names_a_renamed_step_and_gc_forgets_it(workspace, tmp_path):
    """A renamed step has no ``latest`` of its own: the last entry with the same components under another
    name is found (one read), and the reason names both names."""
    before = identity_components(name="a")
    key = cache_key(before)
    workspace.cache.commit(key, "p", "a", before, commit_model(workspace, tmp_path))
    renamed = identity_components(name="b")
    assert workspace.cache.lookup(cache_key(renamed)) is None  # the name is in the key
    assert workspace.cache.explain("p", "b", renamed) == ["step name a -> b"]
    assert workspace.cache.explain("other_pipeline", "b", renamed) == ["step name a -> b"]
    assert workspace.cache.explain("p", "b", identity_components(name="b", version="3.11.9")) == [
        "no previous run of this step"]
    workspace.cache.delete_entry(key)
    assert workspace.cache.explain("p", "b", renamed) == ["no previous run of this step"]
    assert not [o.key for o in workspace.datastore.list("cache/unnamed")]


def test_explain_against_an_entry_from_before_the_identity_components(workspace, tmp_path):
    old = components()  # environment as a hash string, no step name, no compute/runtime
    workspace.cache.commit(cache_key(old), "p", "train", old, commit_model(workspace, tmp_path))
    assert workspace.cache.explain("p", "train", identity_components()) == [
        "step name train is now part of the key (previous entry predates it)",
        "environment changed (the previous entry recorded it in an older format)",
        "compute is now part of the key (previous entry predates it)",
        "runtime is now part of the key (previous entry predates it)",
    ]


def test_lookup_verifies_the_content_of_outputs(workspace, tmp_path):
    """A file of a cached output overwritten in place (same size, same manifest) is a miss, with the reason;
    the committed bytes put back make it a hit again; an added or a deleted file is a miss."""
    comp = components()
    key = cache_key(comp)
    outputs = commit_model(workspace, tmp_path)
    workspace.cache.commit(key, "p", "train", comp, outputs)
    assert workspace.cache.lookup(key) is not None
    model = "outputs/p/r1/train/model/model.txt"
    overwrite_in_place(workspace.datastore, model, b"w=2")
    assert workspace.cache.lookup(key) is None
    assert workspace.cache.explain("p", "train", comp) == ["output model: file model.txt changed since it was committed"]
    overwrite_in_place(workspace.datastore, model, b"w=1")
    assert workspace.cache.lookup(key) is not None
    workspace.datastore.write_bytes("outputs/p/r1/train/model/notes.txt", b"n")
    assert workspace.cache.lookup(key) is None
    assert workspace.cache.explain("p", "train", comp) == ["output model: file notes.txt was added since it was committed"]
    workspace.datastore.delete("outputs/p/r1/train/model/notes.txt")
    assert workspace.cache.lookup(key) is not None
    workspace.datastore.delete(model)
    assert workspace.cache.lookup(key) is None
    assert workspace.cache.explain("p", "train", comp) == ["output model: file model.txt was deleted since it was committed"]


def test_stale_entry_is_explained_even_when_it_is_not_the_latest(workspace, tmp_path):
    comp, other = components(), components(lr=0.5)
    workspace.cache.commit(cache_key(comp), "p", "train", comp, commit_model(workspace, tmp_path))
    workspace.cache.commit(cache_key(other), "p", "train", other, commit_model(workspace, tmp_path, run="r2"))
    overwrite_in_place(workspace.datastore, "outputs/p/r1/train/model/model.txt", b"w=9")
    assert workspace.cache.lookup(cache_key(comp)) is None
    assert workspace.cache.explain("p", "train", comp) == ["output model: file model.txt changed since it was committed"]
