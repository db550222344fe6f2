"""How a step identifies its inputs (``StepRun.resolve_input``): by what their files really hold.

A real step operator in a real DAG (its constructor only stores arguments), a real workspace (a local
directory, or moto S3 for the ``integration`` variant) and real run records; the StepRun is made outside a
running task (``StepRun.outside_airflow``: no conf check, no Airflow context).
"""

from __future__ import annotations

import pathlib

import pytest

from airflow_mlpipe.errors import WorkspaceError
from airflow_mlpipe.operators.resolve import step_request
from airflow_mlpipe.operators.step import MlpipeStepOperator
from airflow_mlpipe.operators.steprun import StepRun
from airflow_mlpipe.workspace.manifest import build_manifest, commit_output
from tests.workspace.conftest import make_tree, overwrite_in_place


@pytest.fixture
def ws(workspace_target):
    return workspace_target.open()


def operator(**inputs: str) -> MlpipeStepOperator:
    from airflow.sdk import DAG, Param

    # the factory marks a path param's type in its schema; the step reads it from its DAG
    with DAG("p", schedule=None, params={"folder": Param(None, type=["null", "string"], mlpipe_type="path")}):
        return MlpipeStepOperator(task_id="b", script="b.py", inputs=inputs)


def real_digest(tmp_path: pathlib.Path, files: dict[str, str]) -> str:
    return build_manifest(make_tree(tmp_path / f"real-{len(list(tmp_path.iterdir()))}", files))["digest"]


def resolve(ws, ref: str, params: dict | None = None) -> dict:
    return StepRun.outside_airflow(operator(src=ref), ws, "r1", params).resolve_input("src", ref)


def commit_upstream(ws, tmp_path, text: str = "20") -> dict:
    key = "outputs/p/r1/a/out"
    manifest = commit_output(ws.datastore, make_tree(tmp_path / "a-out", {"value.txt": text}), key)
    ws.runs.write_step("p", "r1", "a", {"status": "succeeded", "outputs": {"out": {"key": key, "digest": manifest["digest"]}}})
    return manifest


def test_upstream_output_is_identified_by_its_real_content(ws, tmp_path):
    manifest = commit_upstream(ws, tmp_path)
    ref = "${steps.a.outputs.out}"
    got = resolve(ws, ref)
    assert (got["kind"], got["digest"], got["source"]) == ("dir", manifest["digest"], "a.out")
    # changed in place after the producer recorded it: the key uses what is really there, and says why
    overwrite_in_place(ws.datastore, "outputs/p/r1/a/out/value.txt", b"21")
    got = resolve(ws, ref)
    assert got["digest"] == real_digest(tmp_path, {"value.txt": "21"}) != manifest["digest"]
    assert got["kind"] == "folder"  # the runtime hands the step every file there and checks that digest
    assert got["source"] == "a.out (file value.txt changed since it was committed)"
    # committed again by someone else (a new manifest): its digest, not the one the producer recorded
    other = commit_output(ws.datastore, make_tree(tmp_path / "other", {"value.txt": "99", "x": "y"}),
                          "outputs/p/r1/a/out")
    got = resolve(ws, ref)
    assert (got["kind"], got["digest"]) == ("dir", other["digest"])
    assert got["source"].startswith("a.out (its manifest was rewritten")


def test_workspace_folder_with_manifest_changed_in_place(ws, tmp_path):
    manifest = commit_output(ws.datastore, make_tree(tmp_path / "c", {"a.csv": "1,2\n", "b.csv": "3,4\n"}),
                             "data/committed")
    got = resolve(ws, "${params.folder}", {"folder": "data/committed"})
    assert (got["kind"], got["digest"]) == ("dir", manifest["digest"])
    overwrite_in_place(ws.datastore, "data/committed/b.csv", b"3,5\n")
    got = resolve(ws, "${params.folder}", {"folder": "data/committed"})
    assert (got["kind"], got["digest"]) == ("folder", real_digest(tmp_path, {"a.csv": "1,2\n", "b.csv": "3,5\n"}))


def test_workspace_folder_without_manifest(ws, tmp_path):
    for rel, text in {"a.csv": "1\n", "sub/b.csv": "2\n"}.items():
        ws.datastore.write_bytes(f"data/plain/{rel}", text.encode())
    got = resolve(ws, "${params.folder}", {"folder": "data/plain"})
    # the digest a manifest of these files would have: committing the folder later does not change the key
    assert (got["kind"], got["digest"]) == ("folder", real_digest(tmp_path, {"a.csv": "1\n", "sub/b.csv": "2\n"}))


def test_altered_registered_version_is_refused(ws, tmp_path):
    version = ws.datasets.register("raw", make_tree(tmp_path / "raw", {"data.txt": "hello"}))
    got = resolve(ws, "raw:latest")
    assert (got["kind"], got["digest"], got["version"]) == ("dir", version.digest, 1)
    overwrite_in_place(ws.datastore, f"{version.key}/data.txt", b"hellO")
    with pytest.raises(WorkspaceError, match=r"dataset 'raw' version 1 .* no longer holds what was registered: "
                                             r"file data.txt changed since it was committed"):
        resolve(ws, "raw:latest")
    model = ws.models.register("clf", make_tree(tmp_path / "m", {"w.json": "{}"}))
    ws.datastore.write_bytes(f"{model.key}/extra.bin", b"x")
    with pytest.raises(WorkspaceError, match="model 'clf' version 1 .* file extra.bin was added"):
        resolve(ws, "models:/clf/1")


def test_launch_context_carries_the_digest_of_each_input(ws, workspace_target, tmp_path, monkeypatch):
    from airflow_mlpipe.hooks.workspace import MlpipeHook
    from airflow_mlpipe.operators.resolve import StepPlan

    monkeypatch.setenv("AIRFLOW_CONN_MLPIPE_DEFAULT", workspace_target.connection())
    manifest = commit_upstream(ws, tmp_path)
    op = operator(src="${steps.a.outputs.out}")
    snapshot = ws.snapshot(make_tree(tmp_path / "src", {"b.py": "pass\n"}), git=False)
    inputs = {"src": resolve(ws, "${steps.a.outputs.out}")}
    plan = StepPlan("p", "r1", "b", snapshot, "e", [], inputs, {}, {"params": {}}, "0" * 64)
    request = step_request(StepRun.outside_airflow(op, ws, "r1", hook=MlpipeHook()), plan)
    assert request.context["inputs"] == {"src": {"key": "outputs/p/r1/a/out", "kind": "dir", "digest": manifest["digest"]}}
