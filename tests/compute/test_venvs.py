"""Step environments: one venv per environment hash, built once (uv, else venv+pip), reused, race-safe."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from airflow_mlpipe.compute.venvs import (
    MARKER,
    ensure_venv,
    environment_hash,
    find_uv,
    resolve_python,
    venv_key,
)
from airflow_mlpipe.errors import ComputeError

BASE = sys.executable  # the test venv's interpreter: the step venv is built on its base python


def _prefix(python) -> str:
    return subprocess.run([str(python), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_uv_is_found():
    assert find_uv() is not None


def test_venv_key_is_order_insensitive_and_content_sensitive(tmp_path):
    assert venv_key(BASE, ["b", "a"]) == venv_key(BASE, ["a", " b ", "a"])
    assert venv_key(BASE, ["a"]) != venv_key(BASE, ["a", "b"])
    req = tmp_path / "requirements.txt"
    req.write_text("six\n")
    first = venv_key(BASE, [], req)
    req.write_text("six==1.16.0\n")
    assert venv_key(BASE, [], req) != first
    with pytest.raises(ComputeError, match="not found"):
        resolve_python("no-such-python-3.99")


def test_environment_hash_is_portable(tmp_path):
    """The cache-key hash needs no interpreter on this worker (docker/kubernetes images)."""
    env = {"python": "python3.99", "requirements": ["b", "a"], "image": "img:1", "env": {"X": "1"}}
    same = {"python": "python3.99", "requirements": ["a", "b"], "image": "img:1", "env": {"X": "1"}}
    assert environment_hash(env) == environment_hash(same)
    assert environment_hash(env) != environment_hash(dict(env, image="img:2"))
    assert environment_hash("python3", ["a"]) == environment_hash({"python": "python3", "requirements": ["a"]})
    req = tmp_path / "r.txt"
    req.write_text("six\n")
    first = environment_hash({"requirements_file": str(req)})
    req.write_text("six==1\n")
    assert environment_hash({"requirements_file": str(req)}) != first


def test_empty_environment_gets_its_own_venv_and_is_reused(tmp_path):
    first = ensure_venv(BASE, [], cache_dir=tmp_path)
    assert first.created and first.backend == "uv"
    assert _prefix(first.python) == str(first.path)
    t0 = time.monotonic()
    second = ensure_venv(BASE, [], cache_dir=tmp_path)
    assert not second.created and second.backend == "cached" and second.path == first.path
    assert time.monotonic() - t0 < 0.05
    marker = json.loads((first.path / MARKER).read_text())
    assert marker["hash"] == first.env_hash and marker["backend"] == "uv"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.env_hash, f"{first.env_hash}.lock"])


def test_concurrent_builds_of_one_environment_build_it_once(tmp_path):
    results = []
    barrier = threading.Barrier(3)

    def build():
        barrier.wait()
        results.append(ensure_venv(BASE, [], cache_dir=tmp_path))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and len({r.path for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_half_built_environment_is_rebuilt(tmp_path):
    env_hash = venv_key(BASE, [])
    broken = tmp_path / env_hash
    (broken / "bin").mkdir(parents=True)  # no marker: a pip build that died half-way
    venv = ensure_venv(BASE, [], cache_dir=tmp_path)
    assert venv.created and (venv.path / MARKER).exists()


def test_pip_backend_without_uv(tmp_path):
    venv = ensure_venv(BASE, [], cache_dir=tmp_path, use_uv=False)
    assert venv.created and venv.backend == "pip"
    assert _prefix(venv.python) == str(venv.path)
    assert not ensure_venv(BASE, [], cache_dir=tmp_path, use_uv=False).created


def test_failed_install_leaves_nothing_behind(tmp_path):
    lines: list[str] = []
    with pytest.raises(ComputeError, match="building the step environment failed"):
        ensure_venv(BASE, ["this-package-does-not-exist-mlpipe==0.0.0"], cache_dir=tmp_path, on_log=lines.append,
                    use_uv=True)
    assert not [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")]


@pytest.mark.integration
def test_requirement_is_installed_from_the_registry(tmp_path):
    """Needs the package index (uv, warm cache usually): ``six`` importable in the step venv only."""
    venv = ensure_venv(BASE, ["six"], cache_dir=tmp_path)
    out = subprocess.run([str(venv.python), "-c", "import six, sys; print(six.__file__.startswith(sys.prefix))"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
    assert ensure_venv(BASE, ["six"], cache_dir=tmp_path).backend == "cached"
