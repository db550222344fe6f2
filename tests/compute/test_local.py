"""The ``local`` compute target: a real subprocess per step, in a cached venv, with the staged runtime."""

from __future__ import annotations

import os
import pathlib
import threading
import time

import pytest

from airflow_mlpipe.compute import StepTimedOut, get_target
from airflow_mlpipe.compute.local import LocalTarget
from airflow_mlpipe.errors import ComputeError
from airflow_mlpipe.workspace.manifest import build_manifest, read_manifest
from tests.conftest import scaled

from .conftest import make_context, prep_request, script_request


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_quickstart_prep_then_train_end_to_end(local_config, workspace, src_dir):
    lines: list[str] = []
    target = get_target("local", local_config)
    assert isinstance(target, LocalTarget)
    assert target.run(prep_request(workspace, src_dir), lines.append) == 0
    assert any("wrote 400 rows" in line for line in lines)
    assert any(line.startswith("::mlpipe-metric::") for line in lines)
    manifest = read_manifest(workspace, "outputs/p/r1/prep/table")
    assert manifest is not None and "table.csv" in manifest["files"]

    train = make_context(
        workspace.uri, "train.py",
        [["--data"], [{"input": "table"}], ["--learning-rate"], ["0.5"], ["--epochs"], ["5"],
         ["--model"], [{"output": "model"}]],
        step="train", inputs={"table": {"key": "outputs/p/r1/prep/table", "kind": "dir"}},
        outputs={"model": "outputs/p/r1/train/model"},
    )
    request = prep_request(workspace, src_dir)
    request.context = train
    assert get_target("local", local_config).run(request, lines.append) == 0
    result = workspace.get_json(train["result_key"])
    assert result["status"] == "succeeded" and "accuracy" in result["metrics"]


def test_snapshot_runs_in_a_fresh_scratch_dir_removed_afterwards(local_config, workspace, src_dir, tmp_path):
    from airflow_mlpipe.workspace.snapshot import snapshot_source

    snap = snapshot_source(workspace, src_dir, cache_dir=tmp_path / "hashcache", git=False)
    request = prep_request(workspace, src_dir)
    request.workdir = None
    request.context["snapshot"] = {"key": snap.key, "sha256": snap.sha256}
    target = get_target("local", local_config)
    lines: list[str] = []
    assert target.run(request, lines.append) == 0, lines
    assert any(f"to {target.last_scratch}" in line for line in lines)  # ran from the scratch dir
    assert str(target.last_scratch).startswith(local_config["scratch_dir"])
    assert not target.last_scratch.exists()
    keep = get_target("local", dict(local_config, keep_scratch=True))
    assert keep.run(request, lines.append) == 0
    assert (keep.last_scratch / "prep.py").exists()


def test_logs_stream_line_by_line_before_the_process_ends(local_config, workspace, src_dir):
    body = "import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')\n"
    arrivals: dict[str, float] = {}
    target = get_target("local", local_config)
    t0 = time.monotonic()
    code = target.run(script_request(workspace, src_dir, "slow.py", body), lambda line: arrivals.setdefault(line, time.monotonic() - t0))
    end = time.monotonic() - t0
    assert code == 0
    assert arrivals["first"] < end - 1.0, (arrivals, end)
    assert arrivals["second"] >= 1.4


def test_kill_stops_the_step_and_its_children(local_config, workspace, src_dir, tmp_path):
    pids = tmp_path / "pids"
    body = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "print('ready', flush=True)\ntime.sleep(60)\n"
    )
    target = get_target("local", local_config)
    box: dict = {}
    runner = threading.Thread(
        target=lambda: box.update(code=target.run(script_request(workspace, src_dir, "sleepy.py", body), lambda line: None))
    )
    t0 = time.monotonic()
    runner.start()
    while not pids.exists() or not pids.read_text():
        assert time.monotonic() - t0 < scaled(20), "the step did not start"
        time.sleep(0.05)
    launcher_pid, child_pid = map(int, pids.read_text().split())
    target.kill()
    target.kill()  # idempotent
    runner.join(scaled(15))
    assert not runner.is_alive()
    assert box["code"] == 143  # SIGTERM; the launcher records a failed result
    assert time.monotonic() - t0 < scaled(10)
    deadline = time.monotonic() + scaled(5)
    while (_alive(child_pid) or _alive(launcher_pid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child_pid) and not _alive(launcher_pid)
    result = workspace.get_json(make_context(workspace.uri, "sleepy.py", [], step="sleepy")["result_key"])
    assert result["status"] == "failed" and result["exit_code"] == 143


def test_kill_escalates_to_sigkill_when_sigterm_is_ignored(local_config, workspace, src_dir):
    body = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    target = get_target("local", dict(local_config, kill_grace=1))
    started = threading.Event()

    def on_log(line: str) -> None:
        if line == "ready":
            started.set()

    box: dict = {}
    runner = threading.Thread(target=lambda: box.update(code=target.run(script_request(workspace, src_dir, "stubborn.py", body), on_log)))
    runner.start()
    assert started.wait(20)
    t0 = time.monotonic()
    target.kill()
    runner.join(scaled(15))
    assert box["code"] == 137 and 0.9 < time.monotonic() - t0 < scaled(8)


def test_kill_before_run_refuses_to_start(local_config, workspace, src_dir):
    target = get_target("local", local_config)
    target.kill()
    with pytest.raises(ComputeError, match="killed before it started"):
        target.run(prep_request(workspace, src_dir), lambda line: None)


def test_timeout_kills_and_raises(local_config, workspace, src_dir):
    body = "import time\ntime.sleep(30)\n"
    t0 = time.monotonic()
    with pytest.raises(StepTimedOut, match="timeout"):
        get_target("local", local_config).run(script_request(workspace, src_dir, "t.py", body, timeout=1), lambda line: None)
    assert time.monotonic() - t0 < scaled(8)


def test_environment_is_minimal_and_carries_request_env(local_config, workspace, src_dir, monkeypatch):
    monkeypatch.setenv("WORKER_SECRET", "do-not-leak")
    body = "import os, sys\nprint('ENV', sorted(k for k in os.environ if k in ('WORKER_SECRET', 'AWS_ACCESS_KEY_ID', 'VIRTUAL_ENV')))\nprint('PY', sys.prefix)\n"
    lines: list[str] = []
    target = get_target("local", local_config)
    assert target.run(script_request(workspace, src_dir, "env.py", body, env={"AWS_ACCESS_KEY_ID": "AKIA"}), lines.append) == 0
    assert "ENV ['AWS_ACCESS_KEY_ID', 'VIRTUAL_ENV']" in lines
    assert f"PY {target.venv.path}" in lines


def test_same_output_digest_as_the_runtime_computes(local_config, workspace, src_dir):
    get_target("local", local_config).run(prep_request(workspace, src_dir, rows=250), lambda line: None)
    local_dir = src_dir / ".mlpipe" / "outputs" / "table"
    assert read_manifest(workspace, "outputs/p/r1/prep/table")["digest"] == build_manifest(local_dir)["digest"]


def test_unknown_python_is_a_clear_error(local_config, workspace, src_dir):
    with pytest.raises(ComputeError, match="not found on this worker"):
        get_target("local", local_config).run(prep_request(workspace, src_dir, python="python9.99"), lambda line: None)


def test_not_isolated_uses_the_interpreter_directly(local_config, workspace, src_dir):
    target = get_target("local", dict(local_config, isolated=False))
    assert target.run(prep_request(workspace, src_dir), lambda line: None) == 0
    assert target.venv is None
    with pytest.raises(ComputeError, match="isolated=false"):
        target.run(prep_request(workspace, src_dir, requirements=["six"]), lambda line: None)


def test_pid_cleanup_helper():
    assert _alive(os.getpid())
