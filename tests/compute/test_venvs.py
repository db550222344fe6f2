"""Step environments: one venv per environment hash, built once (uv, else venv+pip), reused, race-safe;
the identity of what was really built (interpreter, version, installed packages) recorded in its marker.
Packages come from tiny local wheels (tests/fixtures/envs.py), installed with ``--no-index``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from airflow_mlpipe.compute.venvs import (
    MARKER,
    ensure_venv,
    find_uv,
    interpreter_identity,
    requirements_digest,
    resolve_python,
    venv_identity,
    venv_key,
)
from airflow_mlpipe.errors import ComputeError
from tests.fixtures.envs import PACKAGE, make_wheel, processes_started, requirements_file

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


def test_nested_requirement_files_count_by_content_relative_to_the_including_file(tmp_path):
    """``-r``/``-c``/``--requirement``/``--constraint`` inside a requirements file name other files, relative
    to the file that names them; a change in any of them is a change of the environment (a new venv)."""
    top = tmp_path / "env" / "requirements.txt"
    (tmp_path / "env" / "sub").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    top.write_text("# the top file\n-r sub/base.txt\n--constraint=../shared/pins.txt\nsix\n")
    (tmp_path / "env" / "sub" / "base.txt").write_text("--requirement more.txt  # nested twice\nattrs\n")
    (tmp_path / "env" / "sub" / "more.txt").write_text("-c ../../shared/pins.txt\nidna\n")
    (tmp_path / "shared" / "pins.txt").write_text("six==1.16.0\n")
    keys, digests = [venv_key(BASE, [], top)], [requirements_digest(top)]
    for path, text in ((tmp_path / "env" / "sub" / "more.txt", "-c ../../shared/pins.txt\nidna==3.7\n"),
                       (tmp_path / "shared" / "pins.txt", "six==1.17.0\n"),
                       (tmp_path / "env" / "sub" / "base.txt", "--requirement more.txt\nattrs==24.2.0\n")):
        path.write_text(text)
        keys.append(venv_key(BASE, [], top))
        digests.append(requirements_digest(top))
    assert len(set(keys)) == len(keys) and len(set(digests)) == len(digests)
    # by content, not by place: a copy of the tree elsewhere is the same environment
    import shutil

    shutil.copytree(tmp_path / "env", tmp_path / "copy" / "env")
    shutil.copytree(tmp_path / "shared", tmp_path / "copy" / "shared")
    assert requirements_digest(tmp_path / "copy" / "env" / "requirements.txt") == digests[-1]
    # a file that names itself (directly or not) is read once, not forever
    (tmp_path / "env" / "sub" / "more.txt").write_text("-r base.txt\n")
    assert requirements_digest(top) != digests[-1]
    (tmp_path / "env" / "sub" / "more.txt").write_text("-r missing.txt\n")
    with pytest.raises(ComputeError, match=r"missing\.txt.*more\.txt"):
        venv_key(BASE, [], top)


def test_marker_records_the_interpreter_and_the_installed_packages(tmp_path):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, version="1.0")
    req = requirements_file(tmp_path / "requirements.txt", wheels, PACKAGE)
    venv = ensure_venv(BASE, [], req, cache_dir=tmp_path / "venvs")
    base_version = subprocess.run([BASE, "-c", "import platform; print(platform.python_version())"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    marker = json.loads((venv.path / MARKER).read_text())
    expected = {"python": os.path.realpath(resolve_python(BASE)), "python_version": base_version,
                "packages": [f"{PACKAGE}==1.0"]}
    assert marker["identity"] == expected
    # reading it back (the cache-hit path) is a file read: no subprocess
    with processes_started() as started:
        again = ensure_venv(BASE, [], req, cache_dir=tmp_path / "venvs")
        assert venv_identity(again) == expected
    assert started == [] and not again.created


def test_unpinned_requirement_rebuilt_elsewhere_resolves_newer_and_changes_identity(tmp_path):
    """The same requirement text on another worker (another venv cache) built later gets what the index
    then offers: the identity follows the built venv, not the requirement strings."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, version="1.0")
    req = requirements_file(tmp_path / "requirements.txt", wheels, PACKAGE)
    first = venv_identity(ensure_venv(BASE, [], req, cache_dir=tmp_path / "worker-1"))
    make_wheel(wheels, version="1.1")
    assert venv_identity(ensure_venv(BASE, [], req, cache_dir=tmp_path / "worker-1")) == first  # same venv
    second = venv_identity(ensure_venv(BASE, [], req, cache_dir=tmp_path / "worker-2"))
    assert first["packages"] == [f"{PACKAGE}==1.0"] and second["packages"] == [f"{PACKAGE}==1.1"]


def test_identity_follows_a_package_installed_into_the_venv_later(tmp_path):
    """Someone installs into a cached venv after it was built: the marker is re-read from the venv."""
    wheels = tmp_path / "wheels"
    make_wheel(wheels, version="1.0")
    venv = ensure_venv(BASE, [], cache_dir=tmp_path / "venvs")
    assert venv_identity(venv)["packages"] == []
    subprocess.run([find_uv(), "pip", "install", "-q", "--python", str(venv.python), "--no-index",
                    "--find-links", str(wheels), PACKAGE], check=True, capture_output=True)
    assert venv_identity(venv)["packages"] == [f"{PACKAGE}==1.0"]


def test_marker_of_an_older_version_gets_its_identity_once(tmp_path):
    venv = ensure_venv(BASE, [], cache_dir=tmp_path)
    marker = json.loads((venv.path / MARKER).read_text())
    for key in ("identity", "fingerprint"):
        marker.pop(key)
    (venv.path / MARKER).write_text(json.dumps(marker))
    identity = venv_identity(venv)
    assert identity["python"] == str(resolve_python(BASE)) and identity["packages"] == []
    assert json.loads((venv.path / MARKER).read_text())["identity"] == identity
    with processes_started() as started:
        assert venv_identity(venv) == identity
    assert started == []


def test_interpreter_identity_without_venv_is_probed_once_and_cached(tmp_path):
    """``isolated: false`` runs the interpreter itself: its real path, version and packages, probed once
    and then read from a small file while the interpreter and its site directories are unchanged."""
    identity = interpreter_identity(BASE, cache_dir=tmp_path / "venvs")
    assert identity["python"] == os.path.realpath(BASE)
    assert "pytest==" + pytest.__version__ in identity["packages"]  # the test venv's site-packages
    with processes_started() as started:
        assert interpreter_identity(BASE, cache_dir=tmp_path / "venvs") == identity
    assert started == []


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
