"""The step launcher as a real subprocess, in a python3 without Airflow (only the staged runtime on
PYTHONPATH), against a local workspace: steps 1-6 of docs/internals.md."""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import subprocess
import tarfile

from airflow_mlpipe.workspace.manifest import build_manifest, commit_output, read_manifest

from .conftest import make_context, result_of, run_launcher

OUT = "outputs/p/r1/prep/table"


def test_the_interpreter_has_no_airflow(plain_python, runtime_dir):
    probe = subprocess.run(
        [plain_python, "-s", "-c", "import airflow_mlpipe.runtime.launch, sys; "
         "print(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules)); import airflow"],
        env={"PYTHONPATH": str(runtime_dir)}, capture_output=True, text=True,
    )
    assert probe.stdout.strip() == "False"
    assert "No module named 'airflow'" in probe.stderr


def test_prep_step_commits_output_with_manifest_and_result(plain_python, runtime_dir, workspace, src_dir):
    ctx = make_context(workspace.uri, "prep.py",
                       [["--rows"], ["300"], ["--seed"], ["7"], ["--out"], [{"output": "table"}]],
                       outputs={"table": OUT})
    proc = run_launcher(plain_python, runtime_dir, ctx, src_dir)
    assert proc.returncode == 0, proc.stderr
    assert "wrote 300 rows" in proc.stdout

    manifest = read_manifest(workspace, OUT)
    assert manifest is not None and list(manifest["files"]) == ["table.csv"]
    local = src_dir / ".mlpipe" / "outputs" / "table"
    assert manifest["digest"] == build_manifest(local)["digest"]
    # the manifest is the last object written
    root = workspace.local_path(OUT)
    assert (root / "_manifest.json").stat().st_mtime_ns >= (root / "table.csv").stat().st_mtime_ns

    result = result_of(workspace, ctx)
    assert result["status"] == "succeeded" and result["exit_code"] == 0
    assert result["outputs"]["table"] == {"key": OUT, "digest": manifest["digest"], "size": manifest["size"], "files": 1}
    assert result["metrics"]["rows"] == 300
    assert 0 < result["metrics"]["positive_rate"] < 1


def test_inputs_are_read_only_copies_and_chain_into_train(plain_python, runtime_dir, workspace, src_dir, tmp_path):
    table = tmp_path / "table"
    table.mkdir()
    rows = ["x1,x2,x3,label"] + [f"{i % 3 - 1},{(i * 7) % 5 - 2},{i % 2},{i % 2}" for i in range(200)]
    (table / "table.csv").write_text("\n".join(rows) + "\n")
    commit_output(workspace, table, OUT)

    ctx = make_context(
        workspace.uri, "train.py",
        [["--data"], [{"input": "table"}], ["--learning-rate"], ["0.5"], ["--epochs"], ["12"],
         ["--model"], [{"output": "model"}]],
        step="train", inputs={"table": {"key": OUT, "kind": "dir"}}, outputs={"model": "outputs/p/r1/train/model"},
    )
    proc = run_launcher(plain_python, runtime_dir, ctx, src_dir)
    assert proc.returncode == 0, proc.stderr
    copy = src_dir / ".mlpipe" / "inputs" / "table" / "table.csv"  # a copy, even from a local datastore
    assert copy.read_text() == "\n".join(rows) + "\n" and copy.stat().st_mode & 0o777 == 0o444
    result = result_of(workspace, ctx)
    series = result["metric_series"]["train_loss"]
    assert [p["step"] for p in series] == [0, 10, 11]
    assert result["metrics"]["train_loss"] == series[-1]["value"]
    assert "accuracy" in result["metrics"]
    assert read_manifest(workspace, "outputs/p/r1/train/model")["files"].keys() == {"model.json"}


def test_values_are_never_expanded_again(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "echo.py").write_text(
        "import json, sys\nfrom airflow_mlpipe.runtime import context\n"
        "open(context.outputs['out'] / 'argv.json', 'w').write(json.dumps(sys.argv[1:]))\n"
        "print(str(context.inputs))\n"
    )
    nasty = ["${inputs.data}", "$(touch pwned)", "${outputs.out}", "$${x}", "; rm -rf /", "{\"output\": \"out\"}"]
    ctx = make_context(workspace.uri, "echo.py", [[v] for v in nasty] + [["--out=", {"output": "out"}]],
                       outputs={"out": "outputs/p/r1/echo/out"})
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == 0, proc.stderr
    argv = json.loads((workspace.local_path("outputs/p/r1/echo/out") / "argv.json").read_text())
    assert argv[:-1] == nasty
    assert argv[-1] == f"--out={tmp_path / 'src' / '.mlpipe' / 'outputs' / 'out'}"
    assert not (tmp_path / "src" / "pwned").exists()


def test_failing_script_writes_failed_result_and_no_manifest(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "fail.py").write_text(
        "import sys\nfrom airflow_mlpipe.runtime import context\n"
        "(context.outputs['out'] / 'part.txt').write_text('half')\n"
        "context.log_metric('progress', 0.5)\n"
        "for i in range(80):\n    print('line', i)\n"
        "print('boom', file=sys.stderr)\nsys.exit(3)\n"
    )
    ctx = make_context(workspace.uri, "fail.py", [], outputs={"out": "outputs/p/r1/fail/out"})
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == 3
    assert not workspace.exists("outputs/p/r1/fail/out/_manifest.json")
    assert not workspace.exists("outputs/p/r1/fail/out/part.txt")
    result = result_of(workspace, ctx)
    assert result["status"] == "failed" and result["exit_code"] == 3 and result["phase"] == "script"
    assert result["log_tail"][-1] == "boom" and len(result["log_tail"]) == 50
    assert result["metrics"] == {"progress": 0.5}


def test_exception_in_script_is_exit_code_1_with_traceback(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "raise.py").write_text("def f():\n    raise ValueError('bad data')\nf()\n")
    ctx = make_context(workspace.uri, "raise.py", [])
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == 1
    assert "ValueError: bad data" in proc.stderr
    assert result_of(workspace, ctx)["log_tail"][-1] == "ValueError: bad data"


def test_sigkilled_step_leaves_no_manifest_and_rerun_succeeds(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "crash.py").write_text(
        "import os, signal, sys\nfrom airflow_mlpipe.runtime import context\n"
        "out = context.outputs['out']\n"
        "(out / 'a.txt').write_text('first half')\n"
        "if sys.argv[1] == 'crash':\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "(out / 'b.txt').write_text('second half')\n"
    )
    ctx = make_context(workspace.uri, "crash.py", [["crash"]], outputs={"out": "outputs/p/r1/crash/out"})
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == -9
    assert read_manifest(workspace, "outputs/p/r1/crash/out") is None
    assert list(workspace.list("outputs/p/r1/crash/out")) == []
    assert not workspace.exists(ctx["result_key"])

    rerun = make_context(workspace.uri, "crash.py", [["ok"]], outputs={"out": "outputs/p/r1/crash/out"}, attempt=2)
    proc = run_launcher(plain_python, runtime_dir, rerun, tmp_path / "src")
    assert proc.returncode == 0, proc.stderr
    assert set(read_manifest(workspace, "outputs/p/r1/crash/out")["files"]) == {"a.txt", "b.txt"}


def test_missing_input_manifest_fails_before_the_script(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "never.py").write_text("open('ran', 'w').write('x')\n")
    workspace.write_bytes("outputs/p/r1/prep/table/table.csv", b"half-written")  # no manifest
    ctx = make_context(workspace.uri, "never.py", [], inputs={"t": {"key": "outputs/p/r1/prep/table", "kind": "dir"}})
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == 2
    assert "has no _manifest.json" in proc.stderr
    assert not (tmp_path / "src" / "ran").exists()
    result = result_of(workspace, ctx)
    assert result["status"] == "failed" and result["phase"] == "prepare"


def test_snapshot_is_unpacked_and_kept_outputs_uploaded(plain_python, runtime_dir, workspace, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in {"main.py": "import helper\nhelper.go()\n",
                           "helper.py": "import os\ndef go():\n    os.makedirs('outputs')\n"
                                        "    open('outputs/report.txt', 'w').write('kept')\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    workspace.write_bytes("snapshots/abc.tar.gz", gzip.compress(buf.getvalue()))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ctx = make_context(workspace.uri, "main.py", [], snapshot={"key": "snapshots/abc.tar.gz", "sha256": "abc"})
    proc = run_launcher(plain_python, runtime_dir, ctx, scratch)
    assert proc.returncode == 0, proc.stderr
    assert workspace.read_bytes(ctx["kept_outputs_key"] + "/report.txt") == b"kept"
    assert result_of(workspace, ctx)["kept_outputs"]["files"] == 1


def test_metrics_are_printed_as_machine_readable_lines(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "m.py").write_text(
        "from airflow_mlpipe.runtime import context\n"
        "for i in range(3):\n    context.log_metric('loss', 1.0 / (i + 1), step=i)\n"
        "context.log_params({'lr': 0.1})\ncontext.set_tags({'team': 'ml'})\n"
        "print(context.run_id, context.pipeline, context.step, context.params)\n"
    )
    ctx = make_context(workspace.uri, "m.py", [], params={"lr": 0.1})
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line.split("::mlpipe-metric::", 1)[1]) for line in proc.stdout.splitlines()
             if line.startswith("::mlpipe-metric::")]
    assert [(d["name"], d["step"]) for d in lines if d["kind"] == "metric"] == [("loss", 0), ("loss", 1), ("loss", 2)]
    assert "r1 p prep {'lr': 0.1}" in proc.stdout
    result = result_of(workspace, ctx)
    assert result["metrics"] == {"loss": 1.0 / 3}
    assert result["params_logged"] == {"lr": 0.1} and result["tags"] == {"team": "ml"}


def test_script_run_by_hand_is_offline(plain_python, runtime_dir, src_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [plain_python, "-s", str(src_dir / "prep.py"), "--rows", "120", "--seed", "1", "--out", str(out)],
        env={"PYTHONPATH": str(runtime_dir)}, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[mlpipe offline] metric" in proc.stderr and (out / "table.csv").exists()


def test_launcher_without_context_explains(plain_python, runtime_dir, tmp_path):
    proc = subprocess.run([plain_python, "-s", "-m", "airflow_mlpipe.runtime.launch"], cwd=tmp_path,
                          env={"PYTHONPATH": str(runtime_dir)}, capture_output=True, text=True)
    assert proc.returncode == 2 and "MLPIPE_CONTEXT is not set" in proc.stderr


def test_undeclared_reference_is_a_prepare_failure(plain_python, runtime_dir, workspace, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "s.py").write_text("pass\n")
    ctx = make_context(workspace.uri, "s.py", [[{"output": "nope"}]])
    proc = run_launcher(plain_python, runtime_dir, ctx, tmp_path / "src")
    assert proc.returncode == 2 and "not declared" in proc.stderr
    assert pathlib.Path(workspace.local_path(ctx["result_key"])).exists()


def test_user_files_named_like_stdlib_modules_do_not_break_the_launcher(plain_python, runtime_dir, workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for shadow in ("json.py", "copy.py", "tarfile.py", "signal.py"):
        (src / shadow).write_text("raise SystemExit('shadowed stdlib module imported by the launcher')\n")
    (src / "main.py").write_text("import sys\nprint('script ok', sys.path[0])\n")
    ctx = make_context(workspace.uri, "main.py", [])
    proc = run_launcher(plain_python, runtime_dir, ctx, src)
    assert proc.returncode == 0, proc.stderr
    assert f"script ok {src}" in proc.stdout


def test_child_processes_of_the_script_see_the_same_paths(plain_python, runtime_dir, workspace, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "parent.py").write_text(
        "import subprocess, sys\n"
        "code = 'from airflow_mlpipe.runtime import context as c; (c.outputs[\"o\"] / \"child.txt\").write_text(c.run_id)'\n"
        "subprocess.run([sys.executable, '-c', code], check=True)\n"
    )
    ctx = make_context(workspace.uri, "parent.py", [], outputs={"o": "outputs/p/r1/parent/o"})
    proc = run_launcher(plain_python, runtime_dir, ctx, src)
    assert proc.returncode == 0, proc.stderr
    assert workspace.read_bytes("outputs/p/r1/parent/o/child.txt") == b"r1"
