"""In-process unit tests of the runtime pieces: argv resolution, context, materialisation, bundle."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import pathlib
import stat
import subprocess
import sys
import tarfile
import zipfile

import pytest

from airflow_mlpipe.runtime import bundle
from airflow_mlpipe.runtime.arguments import ArgvError, resolve_argv
from airflow_mlpipe.runtime.context import StepContext
from airflow_mlpipe.runtime.launch import Launcher
from airflow_mlpipe.runtime.materialize import (
    RuntimeStepError,
    materialise_inputs,
    prepare_outputs,
    unpack_snapshot,
)
from airflow_mlpipe.workspace.datastore import LocalDatastore
from airflow_mlpipe.workspace.manifest import build_manifest, commit_output, read_manifest, verify_output
from tests.conftest import scaled
from tests.workspace.conftest import make_tree

from .conftest import make_context

# -- argv -------------------------------------------------------------------------------------------


def test_resolve_argv_joins_segments_without_parsing():
    inputs, outputs = {"d": pathlib.Path("/in/d")}, {"m": pathlib.Path("/out/m")}
    argv = [["--data"], [{"input": "d"}], ["--model=", {"output": "m"}, "/x"], "${inputs.d}", [3]]
    assert resolve_argv(argv, inputs, outputs) == ["--data", "/in/d", "--model=/out/m/x", "${inputs.d}", "3"]


@pytest.mark.parametrize("argv, message", [
    ([[{"input": "zz"}]], "not declared"),
    ([[{"param": "x"}]], "unknown reference"),
    ([[{"input": "d", "output": "m"}]], "neither text"),
    ([{"input": "d"}], "must be a list"),
    ("--x", "argv must be a list"),
])
def test_resolve_argv_errors(argv, message):
    with pytest.raises(ArgvError, match=message):
        resolve_argv(argv, {"d": pathlib.Path("/d")}, {"m": pathlib.Path("/m")})


# -- context ------------------------------------------------------------------------------------------


def test_offline_context_prints_and_keeps_metrics(monkeypatch, capsys):
    monkeypatch.delenv("MLPIPE_CONTEXT", raising=False)
    ctx = StepContext()
    assert ctx.offline and ctx.params == {} and ctx.inputs == {} and ctx.run_id == "offline"
    ctx.log_metric("acc", 0.5)
    ctx.log_metric("acc", 0.75, step=2)
    ctx.log_metric("weird", float("nan"))
    assert ctx.metrics == {"acc": 0.75, "weird": "nan"}
    assert [p["step"] for p in ctx.metric_series["acc"]] == [None, 2]
    assert "[mlpipe offline] metric" in capsys.readouterr().err


def test_context_reads_env_and_validates(monkeypatch):
    monkeypatch.setenv("MLPIPE_CONTEXT", json.dumps({"run_id": "r9", "pipeline": "p", "step": "s", "params": {"a": 1}}))
    ctx = StepContext()
    assert not ctx.offline and ctx.run_id == "r9" and ctx.params == {"a": 1}
    with pytest.raises(TypeError):
        ctx.log_metric("x", "not a number")
    with pytest.raises(TypeError):
        ctx.log_metric("x", 1, step=1.5)
    with pytest.raises(ValueError):
        ctx.log_metric("", 1)
    with pytest.raises(TypeError):
        ctx.log_params(["a"])


# -- materialisation ------------------------------------------------------------------------------


class RemoteLikeDatastore(LocalDatastore):
    """A local datastore that pretends to be remote (no in-place paths): inputs get downloaded."""

    def local_path(self, key):
        return None


def test_inputs_are_downloaded_when_not_local(tmp_path):
    ds = RemoteLikeDatastore(str(tmp_path / "ws"))
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("A")
    commit_output(ds, src, "outputs/p/r/s/data")
    ds.write_bytes("outputs/p/r/s/data/stray.tmp", b"not in the manifest")
    ds.write_bytes("datasets/f/model.bin", b"M")
    work = tmp_path / "work"
    paths = materialise_inputs(ds, {"data": {"key": "outputs/p/r/s/data", "kind": "dir"},
                                    "f": {"key": "datasets/f/model.bin", "kind": "file"}}, work)
    assert paths["data"] == work / ".mlpipe" / "inputs" / "data"
    assert (paths["data"] / "sub" / "a.txt").read_text() == "A"
    assert not (paths["data"] / "stray.tmp").exists()
    assert paths["f"] == work / ".mlpipe" / "inputs" / "f" / "model.bin" and paths["f"].read_bytes() == b"M"


def test_local_inputs_are_read_only_copies(tmp_path):
    """On a local workspace the step gets copies: a script that writes to its input (as root, file modes do
    not stop it) changes its copy, never the committed output."""
    ds = LocalDatastore(str(tmp_path / "ws"))
    manifest = commit_output(ds, make_tree(tmp_path / "src", {"sub/a.txt": "A"}), "outputs/p/r/s/data")
    ds.write_bytes("datasets/f/model.bin", b"M")
    work = tmp_path / "work"
    paths = materialise_inputs(ds, {"data": {"key": "outputs/p/r/s/data", "kind": "dir", "digest": manifest["digest"]},
                                    "f": {"key": "datasets/f/model.bin", "kind": "file",
                                          "digest": hashlib.sha256(b"M").hexdigest()}}, work)
    assert paths["data"] == work / ".mlpipe" / "inputs" / "data"
    assert paths["f"] == work / ".mlpipe" / "inputs" / "f" / "model.bin"
    copy = paths["data"] / "sub" / "a.txt"
    assert copy.read_text() == "A" and stat.S_IMODE(copy.stat().st_mode) == 0o444
    assert stat.S_IMODE(paths["f"].stat().st_mode) == 0o444
    copy.chmod(0o644)  # what a careless script may do (root would not even need it)
    with open(copy, "a") as fh:
        fh.write("+changed")
    assert ds.read_bytes("outputs/p/r/s/data/sub/a.txt") == b"A"
    assert verify_output(ds, "outputs/p/r/s/data", manifest["digest"])


@pytest.mark.parametrize("store", [LocalDatastore, RemoteLikeDatastore])
def test_folder_inputs_without_manifest(tmp_path, store):
    ds = store(str(tmp_path / "ws"))
    for rel, data in {"a.csv": b"1\n", "sub/b.csv": b"2\n"}.items():
        ds.write_bytes(f"data/plain/{rel}", data)
    digest = build_manifest(make_tree(tmp_path / "same", {"a.csv": "1\n", "sub/b.csv": "2\n"}))["digest"]
    paths = materialise_inputs(ds, {"d": {"key": "data/plain", "kind": "folder", "digest": digest}}, tmp_path / "w")
    assert paths["d"] == tmp_path / "w" / ".mlpipe" / "inputs" / "d"
    assert sorted(p.relative_to(paths["d"]).as_posix() for p in paths["d"].rglob("*") if p.is_file()) == ["a.csv", "sub/b.csv"]
    with pytest.raises(RuntimeStepError, match="nothing at"):
        materialise_inputs(ds, {"d": {"key": "data/none", "kind": "folder"}}, tmp_path / "w2")


@pytest.mark.parametrize("store", [LocalDatastore, RemoteLikeDatastore])
def test_input_that_is_not_what_the_key_used_is_refused(tmp_path, store):
    """The operator keyed the step on a digest; if the bytes changed since (a file rewritten in place after
    the key was computed), the runtime refuses to run the step on them."""
    ds = store(str(tmp_path / "ws"))
    manifest = commit_output(ds, make_tree(tmp_path / "src", {"a.txt": "AAAA"}), "outputs/p/r/s/data")
    overwrite = tmp_path / "ws" / "outputs" / "p" / "r" / "s" / "data" / "a.txt"
    with open(overwrite, "r+b") as fh:
        fh.write(b"BBBB")
    spec = {"key": "outputs/p/r/s/data", "kind": "dir", "digest": manifest["digest"]}
    with pytest.raises(RuntimeStepError, match=r"input 'data'.* does not hold what the step was keyed on"):
        materialise_inputs(ds, {"data": spec}, tmp_path / "w")
    with pytest.raises(RuntimeStepError, match=r"input 'data'.* does not hold what the step was keyed on"):
        materialise_inputs(ds, {"data": {**spec, "kind": "folder"}}, tmp_path / "w")
    real = build_manifest(make_tree(tmp_path / "real", {"a.txt": "BBBB"}))["digest"]
    paths = materialise_inputs(ds, {"data": {**spec, "kind": "folder", "digest": real}}, tmp_path / "w")
    assert sorted(p.name for p in paths["data"].iterdir()) == ["a.txt"]  # the stale manifest is not content
    ds.write_bytes("f.bin", b"x")
    with pytest.raises(RuntimeStepError, match=r"input 'f'.* does not hold what the step was keyed on"):
        materialise_inputs(ds, {"f": {"key": "f.bin", "kind": "file", "digest": "0" * 64}}, tmp_path / "w")


def test_input_errors(tmp_path):
    ds = LocalDatastore(str(tmp_path / "ws"))
    with pytest.raises(RuntimeStepError, match="does not exist"):
        materialise_inputs(ds, {"f": {"key": "nope.bin", "kind": "file"}}, tmp_path)
    with pytest.raises(RuntimeStepError, match="kind must be"):
        materialise_inputs(ds, {"f": {"key": "x", "kind": "table"}}, tmp_path)
    with pytest.raises(RuntimeStepError, match="no key"):
        prepare_outputs({"o": {}}, tmp_path)


class FailingUploadDatastore(LocalDatastore):
    def upload_many(self, items, progress=None):
        items = list(items)
        super().upload_many(items[:1], progress)
        raise OSError("disk full after the first file")


def _tar_gz(members: list[tarfile.TarInfo]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            data = b"x" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def test_snapshot_is_unpacked_with_the_shared_rules(tmp_path):
    ws = LocalDatastore(str(tmp_path / "ws"))
    ws.write_bytes("snapshots/ok.tar.gz", _tar_gz([tarfile.TarInfo("main.py"), tarfile.TarInfo("pkg/a.py")]))
    assert sorted(unpack_snapshot(ws, "snapshots/ok.tar.gz", tmp_path / "work")) == ["main.py", "pkg/a.py"]
    link = tarfile.TarInfo("pkg/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
    for name, member in {"dotdot": tarfile.TarInfo("../evil.py"), "link": link}.items():
        ws.write_bytes(f"snapshots/{name}.tar.gz", _tar_gz([tarfile.TarInfo("ok.py"), member]))
        with pytest.raises(RuntimeStepError, match="cannot unpack the step's source snapshot .* delete it") as refused:
            unpack_snapshot(ws, f"snapshots/{name}.tar.gz", tmp_path / name)
        assert repr(member.name) in str(refused.value)
        assert list((tmp_path / name).iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_upload_failure_leaves_no_manifest_and_a_failed_result(tmp_path, monkeypatch):
    ds = FailingUploadDatastore(str(tmp_path / "ws"))
    monkeypatch.setattr("airflow_mlpipe.runtime.launch.open_workspace", lambda uri: ds)
    work = tmp_path / "work"
    work.mkdir()
    (work / "w.py").write_text(
        "from airflow_mlpipe.runtime import context\n"
        "for n in 'abc':\n    (context.outputs['o'] / n).write_text(n)\n"
    )
    ctx = make_context(ds.uri, "w.py", [], outputs={"o": "outputs/p/r1/w/o"})
    assert Launcher(ctx, work).run() == 2
    assert read_manifest(ds, "outputs/p/r1/w/o") is None
    result = ds.get_json(ctx["result_key"])
    assert result["status"] == "failed" and result["phase"] == "commit" and "disk full" in result["error"]


@pytest.mark.integration
def test_launcher_against_s3(tmp_path, moto_env, s3_workspace_uri, moto_s3_options, runtime_dir):
    """S3 workspace (moto server): the input is downloaded, the output uploaded with its manifest."""
    from airflow_mlpipe.workspace.datastore import open_datastore

    ds = open_datastore(s3_workspace_uri, **moto_s3_options)
    src = tmp_path / "in"
    src.mkdir()
    (src / "x.txt").write_text("hello")
    commit_output(ds, src, "outputs/p/r1/a/x")
    work = tmp_path / "work"
    work.mkdir()
    (work / "copy.py").write_text(
        "import shutil, sys\nshutil.copy(sys.argv[1] + '/x.txt', sys.argv[2] + '/y.txt')\n")
    ctx = make_context(s3_workspace_uri, "copy.py", [[{"input": "x"}], [{"output": "y"}]],
                       inputs={"x": {"key": "outputs/p/r1/a/x", "kind": "dir"}}, outputs={"y": "outputs/p/r1/b/y"})
    env = dict(moto_env, PYTHONPATH=str(runtime_dir), MLPIPE_CONTEXT=json.dumps(ctx))
    proc = subprocess.run(bundle.launch_command(sys.executable), cwd=work, env=env,
                          capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 0, proc.stderr
    assert (work / ".mlpipe" / "inputs" / "x" / "x.txt").read_text() == "hello"
    assert ds.read_bytes("outputs/p/r1/b/y/y.txt") == b"hello"
    assert read_manifest(ds, "outputs/p/r1/b/y")["files"]["y.txt"]["size"] == 5


# -- bundle -------------------------------------------------------------------------------------------------


def test_bundle_contents_are_stdlib_only():
    data = bundle.runtime_bundle()
    assert bundle.runtime_bundle() is data  # cached per process
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"airflow_mlpipe/__init__.py", "airflow_mlpipe/errors.py", "airflow_mlpipe/runtime/launch.py",
            "airflow_mlpipe/runtime/context.py", "airflow_mlpipe/workspace/__init__.py",
            "airflow_mlpipe/workspace/datastore.py", "airflow_mlpipe/workspace/manifest.py"} <= names
    assert not any(n.startswith(("airflow_mlpipe/compute", "airflow_mlpipe/operators")) for n in names)
    for name, source in bundle.bundle_files().items():
        assert bundle.is_stdlib_only(source), name
    assert len(bundle.runtime_env()[bundle.RUNTIME_ZIP_ENV]) < bundle.MAX_ENV_VALUE


def test_is_stdlib_only_looks_at_import_time_imports_only():
    assert bundle.is_stdlib_only(b"import json\ndef f():\n    import boto3\n")
    assert not bundle.is_stdlib_only(b"import json\ntry:\n    import yaml\nexcept ImportError:\n    pass\n")
    assert not bundle.is_stdlib_only(b"from pydantic import BaseModel\n")
    assert ast  # noqa: B018 (module used by bundle)


def run_from_zip(python: str, tmp_path, script: str, argv: list) -> tuple[subprocess.CompletedProcess, LocalDatastore,
                                                                           dict]:
    """Run ``script`` as step ``s`` (output ``o``) with ``python3 -I``: no PYTHONPATH, no site-packages, the
    runtime only from the zip in its env var. Returns the process, the workspace and the env it had."""
    ws = LocalDatastore(str(tmp_path / "ws"))
    work = tmp_path / "work"
    work.mkdir()
    (work / "s.py").write_text(script)
    ctx = make_context(ws.uri, "s.py", argv, outputs={"o": "outputs/p/r1/s/o"})
    command = bundle.bootstrap_command(python)
    command.insert(1, "-I")
    env = {"MLPIPE_CONTEXT": json.dumps(ctx), **bundle.runtime_env()}
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=scaled(60))
    return proc, ws, env


def test_bootstrap_runs_the_launcher_from_the_zip_in_isolated_mode(plain_python, tmp_path):
    """``python3 -I``: no PYTHONPATH, no site-packages: the runtime comes only from the env var."""
    proc, ws, env = run_from_zip(plain_python, tmp_path, (
        "import os, sys\nfrom airflow_mlpipe.runtime import context\n"
        "print('ZIP' in os.environ.get('MLPIPE_RUNTIME_ZIP_B64', 'ZIP'), 'MLPIPE_RUNTIME_ZIP_B64' in os.environ)\n"
        "(context.outputs['o'] / 'f').write_text(sys.argv[1])\n"
    ), [["hi"]])
    assert proc.returncode == 0, proc.stderr
    assert "True False" in proc.stdout  # the big variable is not passed on to the script's children
    assert ws.read_bytes("outputs/p/r1/s/o/f") == b"hi"
    assert base64.b64decode(env[bundle.RUNTIME_ZIP_ENV]) == bundle.runtime_bundle()


def test_the_bundle_ships_rules_and_a_step_process_imports_it(plain_python, tmp_path):
    """rules.py (shared with spec and the workspace) is in the zip, stdlib-only, and importable from the zip
    alone (``python3 -I``) by the launcher and the script it runs."""
    names = zipfile.ZipFile(io.BytesIO(bundle.runtime_bundle())).namelist()
    assert "airflow_mlpipe/rules.py" in names
    assert bundle.is_stdlib_only(bundle.bundle_files()["airflow_mlpipe/rules.py"])
    proc, ws, _ = run_from_zip(plain_python, tmp_path, (
        "import sys\nfrom airflow_mlpipe import rules\nfrom airflow_mlpipe.runtime import context\n"
        "(context.outputs['o'] / 'f').write_text(repr([rules.__file__.endswith('.zip' + '/airflow_mlpipe/rules.py'),"
        " rules.relative_parts('a/../b'), rules.parse_registry_ref('models:/clf@prod', 'models')[2]]))\n"
    ), [])
    assert proc.returncode == 0, proc.stderr
    assert ws.read_bytes("outputs/p/r1/s/o/f") == b"[True, None, 'prod']"


def test_stage_runtime_is_reused(tmp_path):
    first = bundle.stage_runtime(tmp_path)
    mtime = (first / "airflow_mlpipe" / "runtime" / "launch.py").stat().st_mtime_ns
    assert bundle.stage_runtime(tmp_path) == first
    assert (first / "airflow_mlpipe" / "runtime" / "launch.py").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    assert os.path.basename(first) == bundle.bundle_digest()[:20]
