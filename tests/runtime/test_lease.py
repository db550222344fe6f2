"""A stale or orphaned attempt commits nothing (DESIGN.md section 5): the runtime checks the attempt's lease
(``runtime/lease.py``) right before each manifest and watches it while the script runs. Real launcher
processes in their own session (as local compute starts them) against a local workspace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from airflow_mlpipe.runtime import lease
from airflow_mlpipe.runtime.bundle import launch_command
from tests.runtime.conftest import make_context

SCRIPT = """
import os, pathlib, subprocess, sys, time
out = pathlib.Path(sys.argv[1])
here = pathlib.Path.cwd()
child = subprocess.Popen(["sleep", "300"])
pathlib.Path(os.environ["SIGNAL_DIR"], "child.pid").write_text(str(child.pid))
pathlib.Path(os.environ["SIGNAL_DIR"], "started").write_text("1")
deadline = time.monotonic() + float(os.environ.get("WAIT", "60"))
while not pathlib.Path(os.environ["SIGNAL_DIR"], "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
(out / "model.txt").write_text("trained")
child.kill()
"""


def _start(python, runtime_dir, context, cwd, signal_dir, extra_env=None):
    env = {"PATH": os.defpath, "PYTHONPATH": str(runtime_dir), "MLPIPE_CONTEXT": json.dumps(context),
           "SIGNAL_DIR": str(signal_dir), **(extra_env or {})}
    return subprocess.Popen(launch_command(python), cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_for(path, proc, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the step ended before {path.name}: {proc.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def _gone(pid, seconds=30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie whose parent died is reaped by init; treat it as gone once it no longer runs
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def _setup(tmp_path, workspace, src_name="train.py", script=SCRIPT):
    src = tmp_path / "work"
    src.mkdir()
    (src / src_name).write_text(script)
    signal_dir = tmp_path / "signals"
    signal_dir.mkdir()
    key = lease.lease_key("runs/p/r1/steps/train")
    return src, signal_dir, key


@pytest.mark.parametrize("interval", [0.2, 3600.0], ids=["watcher", "commit-fence"])
def test_a_stale_attempt_commits_nothing_after_a_newer_one_claimed(
        plain_python, runtime_dir, workspace, tmp_path, interval):
    src, signal_dir, key = _setup(tmp_path, workspace)
    first = lease.claim(workspace, key, 1)
    context = make_context(workspace.uri, "train.py", [[{"output": "model"}]], step="train",
                           outputs={"model": "outputs/p/r1/train/model"})
    context["lease"] = {"key": key, "token": first["token"], "ttl": 3600, "interval": interval}
    proc = _start(plain_python, runtime_dir, context, src, signal_dir)
    try:
        _wait_for(signal_dir / "started", proc)
        lease.claim(workspace, key, 2)  # Airflow's next try starts while this one still runs
        (signal_dir / "go").write_text("1")
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, out
    assert not workspace.exists("outputs/p/r1/train/model/_manifest.json"), out
    assert workspace.get_json(context["result_key"])["status"] == "failed"
    assert "stale" in out or "no longer owns" in out
    with pytest.raises(lease.LeaseLost):  # and the stale attempt cannot claim the step back
        lease.claim(workspace, key, 1)


def test_an_orphaned_step_stops_itself_and_its_children(plain_python, runtime_dir, workspace, tmp_path):
    """Nobody beats the lease (the task process is gone): the step and what it started stop within the ttl."""
    src, signal_dir, key = _setup(tmp_path, workspace)
    held = lease.claim(workspace, key, 1)
    context = make_context(workspace.uri, "train.py", [[{"output": "model"}]], step="train",
                           outputs={"model": "outputs/p/r1/train/model"})
    context["lease"] = {"key": key, "token": held["token"], "ttl": 1.0, "interval": 0.2}
    started = time.monotonic()
    proc = _start(plain_python, runtime_dir, context, src, signal_dir, {"WAIT": "120"})
    try:
        _wait_for(signal_dir / "child.pid", proc)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert time.monotonic() - started < 60
    assert proc.returncode != 0
    assert _gone(int((signal_dir / "child.pid").read_text())), "the step's child process survived"
    assert not workspace.exists("outputs/p/r1/train/model/_manifest.json")
    assert "stopped beating" in out


def test_a_beating_lease_keeps_a_long_step_alive(plain_python, runtime_dir, workspace, tmp_path):
    src, signal_dir, key = _setup(tmp_path, workspace)
    held = lease.claim(workspace, key, 1)
    context = make_context(workspace.uri, "train.py", [[{"output": "model"}]], step="train",
                           outputs={"model": "outputs/p/r1/train/model"})
    context["lease"] = {"key": key, "token": held["token"], "ttl": 1.0, "interval": 0.2}
    heartbeat = lease.Heartbeat(workspace, key, held["token"], every=0.2).start()
    proc = _start(plain_python, runtime_dir, context, src, signal_dir, {"WAIT": "3"})
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        heartbeat.stop()
    assert proc.returncode == 0, out
    assert workspace.get_json("outputs/p/r1/train/model/_manifest.json")["files"]


def test_claims_only_move_forward(workspace):
    key = lease.lease_key("runs/p/r1/steps/train")
    one = lease.claim(workspace, key, 1)
    lease.beat(workspace, key, one["token"])
    two = lease.claim(workspace, key, 2)
    with pytest.raises(lease.LeaseLost):
        lease.beat(workspace, key, one["token"])
    with pytest.raises(lease.LeaseLost):
        lease.check(workspace, key, one["token"])
    lease.check(workspace, key, two["token"])
    again = lease.claim(workspace, key, 2)  # the same try claiming again (a restarted task) is allowed
    assert again["token"] != two["token"]
