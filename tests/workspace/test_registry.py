from __future__ import annotations

import json
import re
import subprocess
import sys
import threading

import pytest

from airflow_mlpipe.errors import InvalidReferenceError, NotFoundError
from airflow_mlpipe.workspace.manifest import build_manifest, commit_output, read_manifest, verify_content
from airflow_mlpipe.workspace.registry import Version, VersionedRegistry
from tests.conftest import scaled

from .conftest import make_tree, overwrite_in_place, subprocess_target


def register_at_once(workspace, name: str, dirs: list) -> dict:
    """Register each of ``dirs`` as a version of ``name`` from its own thread, all released at once."""
    results = {}
    barrier = threading.Barrier(len(dirs))

    def run(i):
        barrier.wait()
        results[i] = workspace.datasets.register(name, dirs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(dirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results

def test_register_dir_then_identical_then_new(workspace, tmp_path):
    data = make_tree(tmp_path / "d", {"train.csv": "a,b\n1,2\n", "meta/info.txt": "x"})
    v1 = workspace.datasets.register("income", data, description="first", tags={"src": "test"}, producing_run={"run_id": "r1"})
    assert isinstance(v1, Version) and v1.version == 1 and v1.files == 2 and v1.name == "income"
    assert v1.key == f"datasets/income/data/{v1.digest}"
    assert v1.uri == workspace.datastore.uri_for(v1.key)
    assert read_manifest(workspace.datastore, v1.key)["digest"] == v1.digest
    again = workspace.datasets.register("income", data, description="again")
    assert again == v1  # identical content -> the same version
    (data / "train.csv").write_text("a,b\n1,3\n")
    v2 = workspace.datasets.register("income", data)
    assert v2.version == 2 and v2.digest != v1.digest
    assert workspace.datasets.get("income", "latest") == v2
    assert workspace.datasets.get("income", 1) == v1
    assert workspace.datasets.resolve("income") == v2
    assert workspace.datasets.resolve("income:1") == v1
    assert workspace.datasets.resolve("income:latest") == v2
    assert workspace.datasets.resolve("datasets:/income/1") == v1
    assert [v.version for v in workspace.datasets.list_versions("income")] == [1, 2]
    assert workspace.datasets.list_names() == ["income"]
    assert workspace.datasets.latest_digest("income") == v2.digest
    assert workspace.datasets.latest_digest("unknown") is None
    # the first content, registered again after a newer version, still maps to version 1
    (data / "train.csv").write_text("a,b\n1,2\n")
    assert workspace.datasets.register("income", data).version == 1


def test_register_file_and_datastore_keys(workspace, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("x\n1\n")
    v1 = workspace.datasets.register("single", str(one))  # absolute string: a local path
    assert v1.files == 1
    dl = tmp_path / "dl"
    workspace.datastore.download_dir(v1.key, dl)
    assert (dl / "one.csv").read_text() == "x\n1\n"
    # a committed output (server-side copy, no rehash)
    out = make_tree(tmp_path / "out", {"m.json": "{}"})
    manifest = commit_output(workspace.datastore, out, "outputs/p/r/s/model")
    vm = workspace.models.register("clf", "outputs/p/r/s/model", producing_run={"key": "outputs/p/r/s/model"})
    assert vm.digest == manifest["digest"] and vm.version == 1
    assert workspace.datastore.read_bytes(f"{vm.key}/m.json") == b"{}"
    # a plain object and a prefix without manifest
    workspace.datastore.write_bytes("raw/file.txt", b"raw")
    assert workspace.datasets.register("rawfile", "raw/file.txt").files == 1
    workspace.datastore.write_bytes("raw/dir/a", b"a")
    workspace.datastore.write_bytes("raw/dir/b/c", b"c")
    assert workspace.datasets.register("rawdir", "raw/dir").files == 2
    with pytest.raises(NotFoundError):
        workspace.datasets.register("nothing", "raw/none")
    with pytest.raises(NotFoundError):
        workspace.datasets.register("nothing", tmp_path / "absent")


def test_names_and_versions_are_checked(workspace, tmp_path):
    for bad in ("", "a/b", "..", "sp ace"):
        with pytest.raises(ValueError):
            workspace.datasets.get(bad)
    with pytest.raises(NotFoundError, match="not registered"):
        workspace.datasets.get("ghost")
    workspace.datasets.register("real", make_tree(tmp_path / "r", {"f": "1"}))
    with pytest.raises(NotFoundError, match="no version 7"):
        workspace.datasets.get("real", 7)
    with pytest.raises(ValueError):
        workspace.datasets.get("real", 0)
    with pytest.raises(NotFoundError, match="registered: real"):
        workspace.datasets.get("other")
    with pytest.raises(ValueError):
        VersionedRegistry(workspace.datastore, "things")


def test_parallel_registrations_threads(workspace, tmp_path):
    dirs = [make_tree(tmp_path / f"d{i}", {"data.txt": f"content {i}"}) for i in range(8)]
    results = register_at_once(workspace, "shared", dirs)
    assert sorted(v.version for v in results.values()) == list(range(1, 9))
    assert len({v.digest for v in results.values()}) == 8 and all(v.is_new for v in results.values())
    assert workspace.datasets.version_numbers("shared") == list(range(1, 9))  # no gap
    assert workspace.datastore.get_json("datasets/shared/latest.json") == {"version": 8}
    for i, v in results.items():
        assert workspace.datasets.get("shared", v.version).digest == v.digest
        assert workspace.datastore.read_bytes(f"{v.key}/data.txt") == f"content {i}".encode()


CHILD = r"""
import json, pathlib, sys, time
from airflow_mlpipe.workspace.core import Workspace
target = json.loads(sys.argv[1])
ws = Workspace.from_uri(target["uri"], **target["options"])
ws.datasets.list_names()  # warm up (imports, client) before the race
go = pathlib.Path(sys.argv[3])
pathlib.Path(sys.argv[3] + "." + sys.argv[4]).touch()
while not go.exists():
    time.sleep(0.002)
print(ws.datasets.register("multi", pathlib.Path(sys.argv[2])).version)
"""


def test_parallel_registrations_processes(workspace, ds_target, tmp_path):
    import time

    dirs = [make_tree(tmp_path / f"p{i}", {"x.bin": f"process {i}"}) for i in range(8)]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, subprocess_target(ds_target), str(d), str(go), str(i)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, d in enumerate(dirs)
    ]
    deadline = time.monotonic() + scaled(60)
    while len(list(tmp_path.glob("go.*"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # every child is ready: they all register at once
    versions = []
    for proc in procs:
        out, err = proc.communicate(timeout=scaled(60))
        assert proc.returncode == 0, err
        versions.append(int(out.strip()))
    assert sorted(versions) == list(range(1, 9))
    assert len({v.digest for v in workspace.datasets.list_versions("multi")}) == 8
    assert workspace.datasets.version_numbers("multi") == list(range(1, 9))  # no gap
    assert workspace.datastore.get_json("datasets/multi/latest.json") == {"version": 8}


@pytest.mark.parametrize(
    "ref, problem",
    [
        ("income:", "expected NAME, NAME:VERSION or NAME:latest"),  # was the latest version before rules.py
        (" income", "expected NAME"), ("income ", "expected NAME"), ("income\n", "expected NAME"),
        ("-income", "expected NAME"), ("income:x", "expected NAME"), ("income:\u0661", "expected NAME"),
        ("income:0", "versions start at 1"), ("datasets:/income/", "expected datasets:/NAME/VERSION"),
        ("datasets:/income/latest", "expected datasets:/NAME/VERSION"), ("models:/income/1", "expected NAME"),
        ("", "expected NAME"), (None, "expected NAME"),
    ],
)
def test_resolve_refuses_what_a_definition_refuses(workspace, tmp_path, ref, problem):
    workspace.datasets.register("income", make_tree(tmp_path / "d", {"a.csv": "1"}))
    with pytest.raises(InvalidReferenceError, match=f"invalid dataset reference {re.escape(repr(ref))}: {problem}"):
        workspace.datasets.resolve(ref)


def test_aliases_with_history(workspace, tmp_path):
    models = workspace.models
    for i in range(3):
        models.register("clf", make_tree(tmp_path / f"m{i}", {"model.json": json.dumps({"w": i})}))
    assert models.get_alias("clf", "production") is None
    models.set_alias("clf", "production", 1, reason={"why": "first"})
    record = models.set_alias("clf", "production", 3, reason={"accuracy": 0.9})
    assert record["version"] == 3 and [h["version"] for h in record["history"]] == [1, 3]
    assert record["history"][1]["reason"] == {"accuracy": 0.9} and record["history"][0]["set_at"]
    assert models.get_alias("clf", "production") == 3
    assert models.resolve_model_ref("models:/clf@production").version == 3
    assert models.resolve_model_ref("models:/clf/2").version == 2
    assert models.resolve_model_ref("models:/clf").version == 3
    assert models.list_aliases("clf") == {"production": 3}
    with pytest.raises(NotFoundError):
        models.resolve_model_ref("models:/clf@staging")
    with pytest.raises(NotFoundError):
        models.set_alias("clf", "production", 9)
    with pytest.raises(ValueError):
        models.set_alias("clf", "bad/alias", 1)
    with pytest.raises(InvalidReferenceError, match="models:/NAME@ALIAS"):  # models:/clf@pr.od is refused
        models.set_alias("clf", "pr.od", 1)


def test_concurrent_alias_moves(workspace, tmp_path):
    models = workspace.models
    for i in range(4):
        models.register("m", make_tree(tmp_path / f"m{i}", {"w": str(i)}))
    barrier = threading.Barrier(8)

    def move(i):
        barrier.wait()
        models.set_alias("m", "prod", i % 4 + 1, reason={"writer": i})

    threads = [threading.Thread(target=move, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = models.alias_record("m", "prod")
    assert len(record["history"]) == 8  # no update was lost
    assert sorted(h["reason"]["writer"] for h in record["history"]) == list(range(8))
    assert record["version"] == record["history"][-1]["version"]


def test_register_uses_what_a_committed_output_really_holds(workspace, tmp_path):
    """A committed output changed in place since its commit is registered with the digest of its real
    files, never its manifest's; the registered copy carries its own fingerprints."""
    ds = workspace.datastore
    out = make_tree(tmp_path / "out", {"m.json": '{"w": 1}'})
    committed = commit_output(ds, out, "outputs/p/r/s/model")
    overwrite_in_place(ds, "outputs/p/r/s/model/m.json", b'{"w": 2}')
    real = build_manifest(make_tree(tmp_path / "real", {"m.json": '{"w": 2}'}))["digest"]
    version = workspace.models.register("clf", "outputs/p/r/s/model")
    assert version.digest == real != committed["digest"]
    assert ds.read_bytes(f"{version.key}/m.json") == b'{"w": 2}'
    copy = read_manifest(ds, version.key)
    assert copy["fingerprint"] == ds.fingerprint_kind and all("fp" in m for m in copy["files"].values())
    assert verify_content(ds, version.key, copy) == []
    # the version's data altered in place: registering the same content again restores it
    overwrite_in_place(ds, f"{version.key}/m.json", b'{"w": 3}')
    assert workspace.models.register("clf", make_tree(tmp_path / "again", {"m.json": '{"w": 2}'})) == version
    assert ds.read_bytes(f"{version.key}/m.json") == b'{"w": 2}'


# -- the latest pointer (datasets/<name>/latest.json): nothing a register or a name:latest does lists the history


def count_listings(datastore) -> list[str]:
    """Record the prefix of every ``list`` call of this (real) datastore; returns the record."""
    calls: list[str] = []
    original = datastore.list

    def counting(prefix):
        calls.append(prefix)
        return original(prefix)

    datastore.list = counting  # an instance attribute: the datastore itself, with a counter
    return calls


def history_listings(calls: list[str], name: str) -> list[str]:
    """The listings of ``name``'s records (its content's data folders are not its history)."""
    return [p for p in calls if p.startswith(f"datasets/{name}") and "/data/" not in p + "/"]


def pointer(datastore, name: str):
    return datastore.get_json_or_none(f"datasets/{name}/latest.json")


def register_n(workspace, tmp_path, name: str, n: int, start: int = 0) -> list:
    return [workspace.datasets.register(name, make_tree(tmp_path / f"{name}{i}", {"f.txt": f"{name} {i}"}))
            for i in range(start, start + n)]


def died_after_claiming(workspace, name: str, number: int) -> None:
    """What a writer that died between creating version ``number`` and moving the pointer leaves."""
    record = workspace.datasets.get(name, 1).to_dict()
    assert workspace.datastore.create_json(f"datasets/{name}/versions/{number:06d}.json",
                                           {**record, "version": number, "digest": f"{number:064x}"})


def test_latest_and_register_read_the_pointer_not_a_listing(workspace, tmp_path):
    versions = register_n(workspace, tmp_path, "hist", 3)
    assert [v.version for v in versions] == [1, 2, 3] and all(v.is_new for v in versions)
    assert pointer(workspace.datastore, "hist") == {"version": 3}
    calls = count_listings(workspace.datastore)
    assert workspace.datasets.resolve("hist:latest").version == 3
    assert workspace.datasets.resolve("hist").version == 3
    assert workspace.datasets.latest_digest("hist") == versions[-1].digest
    assert history_listings(calls, "hist") == []
    new = workspace.datasets.register("hist", make_tree(tmp_path / "new", {"f.txt": "new"}))
    assert new.version == 4 and new.is_new
    again = workspace.datasets.register("hist", make_tree(tmp_path / "again", {"f.txt": "hist 1"}))
    assert again.version == 2 and not again.is_new and again == versions[1]  # is_new is not compared
    assert history_listings(calls, "hist") == []
    assert pointer(workspace.datastore, "hist") == {"version": 4}
    assert "is_new" not in new.to_dict() and not workspace.datasets.get("hist", 4).is_new


def test_a_lagging_pointer_still_gives_the_latest_and_the_next_number(workspace, tmp_path):
    register_n(workspace, tmp_path, "lag", 2)
    died_after_claiming(workspace, "lag", 3)
    died_after_claiming(workspace, "lag", 4)
    assert pointer(workspace.datastore, "lag") == {"version": 2}
    calls = count_listings(workspace.datastore)
    assert workspace.datasets.resolve("lag:latest").version == 4
    assert pointer(workspace.datastore, "lag") == {"version": 4}  # moved forward by the reader
    died_after_claiming(workspace, "lag", 5)
    new = workspace.datasets.register("lag", make_tree(tmp_path / "n", {"f.txt": "next"}))
    assert new.version == 6 and new.is_new
    assert pointer(workspace.datastore, "lag") == {"version": 6}
    assert history_listings(calls, "lag") == []
    assert workspace.datasets.version_numbers("lag") == [1, 2, 3, 4, 5, 6]


def test_the_pointer_never_moves_backwards(workspace, tmp_path):
    register_n(workspace, tmp_path, "fwd", 3)
    workspace.datasets._advance_pointer("fwd", 2)
    assert pointer(workspace.datastore, "fwd") == {"version": 3}
    workspace.datastore.put_json("datasets/fwd/latest.json", {"version": 1})  # a pointer that lags: repaired
    assert workspace.datasets.get("fwd").version == 3
    assert pointer(workspace.datastore, "fwd") == {"version": 3}


def test_a_workspace_without_pointers_is_listed_once_and_gains_them(workspace, tmp_path):
    register_n(workspace, tmp_path, "old", 3)
    workspace.datastore.delete("datasets/old/latest.json")  # the layout before the pointer
    calls = count_listings(workspace.datastore)
    assert workspace.datasets.resolve("old:latest").version == 3
    assert history_listings(calls, "old") == ["datasets/old/versions"]
    assert pointer(workspace.datastore, "old") == {"version": 3}
    assert workspace.datasets.resolve("old:latest").version == 3
    assert workspace.datasets.register("old", make_tree(tmp_path / "n", {"f.txt": "4th"})).version == 4
    assert history_listings(calls, "old") == ["datasets/old/versions"]  # once, then the pointer


def test_a_damaged_pointer_is_rewritten(workspace, tmp_path):
    register_n(workspace, tmp_path, "bad", 2)
    workspace.datastore.write_bytes("datasets/bad/latest.json", b"{not json")
    assert workspace.datasets.get("bad").version == 2
    assert pointer(workspace.datastore, "bad") == {"version": 2}
    workspace.datastore.put_json("datasets/bad/latest.json", {"version": "two"})
    assert workspace.datasets.register("bad", make_tree(tmp_path / "n", {"f.txt": "3rd"})).version == 3
    assert pointer(workspace.datastore, "bad") == {"version": 3}


def test_unknown_names_have_no_pointer(workspace):
    assert workspace.datasets.latest_number("ghost") == 0
    assert workspace.datasets.list_versions("ghost") == []
    with pytest.raises(NotFoundError, match="not registered"):
        workspace.datasets.resolve("ghost:latest")
    assert pointer(workspace.datastore, "ghost") is None


def test_versions_page_in_order(workspace, tmp_path):
    register_n(workspace, tmp_path, "paged", 7)
    pages, start = [], 1
    while page := workspace.datasets.list_versions("paged", start=start, limit=3):
        pages.append([v.version for v in page])
        start = page[-1].version + 1
    assert pages == [[1, 2, 3], [4, 5, 6], [7]]
    assert [v.version for v in workspace.datasets.iter_versions("paged")] == list(range(1, 8))
    assert [v.version for v in workspace.datasets.list_versions("paged")] == list(range(1, 8))
    assert [v.version for v in workspace.datasets.iter_versions("paged", start=6)] == [6, 7]
    with pytest.raises(ValueError):
        workspace.datasets.list_versions("paged", limit=0)


def test_parallel_registrations_on_a_lagging_pointer(workspace, tmp_path):
    """Writers that race from a pointer two versions behind still get unique, consecutive numbers."""
    register_n(workspace, tmp_path, "race", 1)
    died_after_claiming(workspace, "race", 2)
    died_after_claiming(workspace, "race", 3)
    dirs = [make_tree(tmp_path / f"r{i}", {"data.txt": f"racer {i}"}) for i in range(6)]
    results = register_at_once(workspace, "race", dirs)
    assert sorted(v.version for v in results.values()) == list(range(4, 10))
    assert workspace.datasets.version_numbers("race") == list(range(1, 10))
    assert workspace.datasets.get("race").version == 9
    assert workspace.datastore.get_json("datasets/race/latest.json") == {"version": 9}
