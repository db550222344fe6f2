"""Reuse depends on the environment as it really is, the compute settings that reach the step, the runtime
and the step's name (docs/reuse.md "Key components"), through Airflow (``dag.test()``, real step
subprocesses in venvs built by uv, a local workspace; packages are tiny local wheels installed with
``--no-index``, tests/fixtures/envs.py; the docker case runs podman's Docker Engine API).

- the packages a venv really got: an unpinned requirement built on another worker (another venv cache)
  that resolves to a newer version is a miss naming the package and both versions; a change in a file
  the requirements file names with ``-r`` is a new venv and a miss; an env value is a miss naming the
  variable only; a reused step starts no process at all;
- the interpreter ``python3`` resolves to: pointed elsewhere, a miss naming both real paths;
- the step name: an identical step in another pipeline (a published copy) is reused, two identical steps
  of one pipeline are not, and a renamed step says so;
- docker: the tag moved to another image between two runs is a miss naming the image.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from tests.fixtures.docker import STEP_IMAGE
from tests.fixtures.envs import PACKAGE, make_wheel, processes_started, requirements_file
from tests.operators.kit import activate, edit_source, load, make_dags_folder, run

PACKAGES = """
pipeline: ident
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: pkgs, retries: 0}
compute:
  local: {type: local}
environments:
  pkgs:
    python: python3
    requirements_file: ../env/requirements.txt
    env: {FOO: "one"}
steps:
  a:
    script: step.py
    source_directory: ../src
    arguments: [--out, "${outputs.out}"]
    outputs: {out: {}}
  b:
    script: step.py
    source_directory: ../src
    arguments: [--out, "${outputs.out}"]
    outputs: {out: {}}
"""
SCRIPT = """
import argparse, os, pathlib
import mlpipe_idpkg
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path)
args = parser.parse_args()
(args.out / "v.txt").write_text(mlpipe_idpkg.VERSION + ":" + os.environ["FOO"])
"""


def steps_of(ws, pipeline: str, result) -> dict:
    return ws.runs.get_run(pipeline, result.run_id)["steps"]


def output_text(ws, result, step: str) -> str:
    return ws.datastore.read_bytes(result.xcoms[step]["outputs"]["out"]["key"] + "/v.txt").decode()


@pytest.mark.timeout(900)
def test_reuse_follows_the_packages_really_installed(airflow_db, local_workspace, tmp_path, monkeypatch):
    from airflow_mlpipe.operators.resolve import runtime_identity

    wheels = tmp_path / "wheels"
    make_wheel(wheels, version="1.0")
    dags = make_dags_folder(tmp_path / "dags", {"ident": PACKAGES}, {"src/step.py": SCRIPT, "env/nested/pins.txt": PACKAGE})
    requirements_file(dags / "env" / "requirements.txt", wheels, "-r nested/pins.txt")
    activate(monkeypatch, dags, local_workspace)
    monkeypatch.setenv("MLPIPE_VENV_DIR", str(tmp_path / "worker-1"))
    ws = local_workspace.open()

    # 1. two steps identical but for their names: both run (the name is in the key)
    first = run(load(dags, "ident"))
    assert first.state == "success", first.states
    assert first.ran() == {"a", "b"}
    assert output_text(ws, first, "a") == "1.0:one"
    record = steps_of(ws, "ident", first)
    environment = record["a"]["components"]["environment"]
    assert environment["packages"] == [f"{PACKAGE}==1.0"]
    assert environment["python"] == os.path.realpath(shutil.which("python3"))
    assert "one" not in str(environment["env"])  # env values are digests in the key and the records
    assert record["a"]["components"]["runtime"] == runtime_identity()
    assert record["a"]["components"]["step"]["name"] == "a"

    # 2. nothing changed: reused, and a reused step starts no process (the venv marker is read)
    with processes_started() as started:
        second = run(load(dags, "ident"))
    assert second.reused() == {"a": True, "b": True}
    assert started == []

    # 3. a newer wheel appears; this worker's venv still has 1.0, so the steps still run 1.0: reused
    make_wheel(wheels, version="1.1")
    assert run(load(dags, "ident")).reused() == {"a": True, "b": True}

    # 4. another worker builds the same definition now: it gets 1.1, a miss that says so
    monkeypatch.setenv("MLPIPE_VENV_DIR", str(tmp_path / "worker-2"))
    fourth = run(load(dags, "ident"))
    assert fourth.ran() == {"a", "b"}
    assert output_text(ws, fourth, "a") == "1.1:one"
    assert steps_of(ws, "ident", fourth)["a"]["rerun_reasons"] == [f"environment: package {PACKAGE} 1.0 -> 1.1"]

    # 5. a pin in the file that requirements.txt names with -r: a new venv, and a miss
    make_wheel(wheels, version="1.2")
    edit_source(dags, "env/nested/pins.txt", PACKAGE, f"{PACKAGE}==1.2")
    fifth = run(load(dags, "ident"))
    assert output_text(ws, fifth, "a") == "1.2:one"
    assert steps_of(ws, "ident", fifth)["a"]["rerun_reasons"] == [f"environment: package {PACKAGE} 1.1 -> 1.2"]

    # 6. an env value of the environment: a miss naming the variable, never its value
    edit_source(dags, "pipelines/ident.yaml", 'FOO: "one"', 'FOO: "two"')
    sixth = run(load(dags, "ident"))
    assert output_text(ws, sixth, "b") == "1.2:two"
    assert steps_of(ws, "ident", sixth)["b"]["rerun_reasons"] == ["env FOO changed"]


PLAIN = """
pipeline: NAME
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 0}
compute:
  local: {type: local}
environments:
  plain: {python: python3}
steps:
  STEP:
    script: echo.py
    source_directory: ../src
    arguments: [--out, "${outputs.out}"]
    outputs: {out: {}}
"""
ECHO = """
import argparse, pathlib, sys
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path)
args = parser.parse_args()
(args.out / "v.txt").write_text(sys.version)
"""


def plain(name: str, step: str) -> str:
    return PLAIN.replace("NAME", name).replace("STEP", step)


@pytest.mark.timeout(600)
def test_step_name_is_in_the_key_and_the_pipeline_name_is_not(airflow_db, local_workspace, tmp_path, monkeypatch):
    dags = make_dags_folder(tmp_path / "dags", {"origin": plain("origin", "train"), "origin_v2": plain("origin_v2", "train")},
                            {"src/echo.py": ECHO})
    activate(monkeypatch, dags, local_workspace)
    ws = local_workspace.open()
    first = run(load(dags, "origin"))
    assert first.ran() == {"train"}
    # the same step in another pipeline (a published version, a copy): reused
    copy = run(load(dags, "origin_v2"))
    assert copy.reused() == {"train": True}
    assert copy.xcoms["train"]["reused_from"]["run_id"] == first.run_id
    # renamed: it recomputes, and says why
    edit_source(dags, "pipelines/origin_v2.yaml", "  train:\n", "  fit:\n")
    renamed = run(load(dags, "origin_v2"))
    assert renamed.ran() == {"fit"}
    assert steps_of(ws, "origin_v2", renamed)["fit"]["rerun_reasons"] == ["step name train -> fit"]


@pytest.mark.timeout(600)
def test_a_different_interpreter_behind_python3_is_a_miss(airflow_db, local_workspace, tmp_path, monkeypatch):
    """``python3`` on the worker's PATH now resolves to another interpreter (here a copy of this one at
    another path: the same version, and still a different interpreter)."""
    base = os.path.realpath(sys._base_executable)
    other = tmp_path / "other" / "bin" / os.path.basename(base)
    other.parent.mkdir(parents=True)
    shutil.copy2(base, other)
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3").symlink_to(base)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    dags = make_dags_folder(tmp_path / "dags", {"interp": plain("interp", "s")}, {"src/echo.py": ECHO})
    activate(monkeypatch, dags, local_workspace)
    ws = local_workspace.open()
    assert run(load(dags, "interp")).ran() == {"s"}
    assert run(load(dags, "interp")).reused() == {"s": True}
    (shims / "python3").unlink()
    (shims / "python3").symlink_to(other)
    moved = run(load(dags, "interp"))
    assert moved.ran() == {"s"}
    assert steps_of(ws, "interp", moved)["s"]["rerun_reasons"] == [f"environment: interpreter {base} -> {other}"]


ON_DOCKER = """
pipeline: on_docker
start_date: 2026-01-01
schedule: null
defaults: {compute: podman, environment: image, retries: 0}
compute:
  podman: {type: docker, docker_url: "DOCKER_URL"}
environments:
  image: {python: python3, image: "IMAGE"}
steps:
  s:
    script: which.py
    source_directory: ../src
    arguments: [--out, "${outputs.out}"]
    outputs: {out: {}}
"""
WHICH = """
import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path)
args = parser.parse_args()
marker = pathlib.Path("/mlpipe-idtest.txt")
(args.out / "v.txt").write_text(marker.read_text() if marker.exists() else "A")
"""


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_a_tag_moved_to_another_image_is_a_miss(airflow_db, docker_url, moving_tag, local_workspace, tmp_path,
                                                monkeypatch):
    tag, image_a, move = moving_tag
    assert STEP_IMAGE != tag
    text = ON_DOCKER.replace("DOCKER_URL", docker_url).replace("IMAGE", tag)
    dags = make_dags_folder(tmp_path / "dags", {"on_docker": text}, {"src/which.py": WHICH})
    activate(monkeypatch, dags, local_workspace)
    ws = local_workspace.open()
    first = run(load(dags, "on_docker"))
    assert first.ran() == {"s"} and output_text(ws, first, "s") == "A"
    assert steps_of(ws, "on_docker", first)["s"]["components"]["environment"]["image_id"] == image_a
    assert run(load(dags, "on_docker")).reused() == {"s": True}
    image_b = move("B")
    moved = run(load(dags, "on_docker"))
    assert moved.ran() == {"s"} and output_text(ws, moved, "s") == "B"
    assert steps_of(ws, "on_docker", moved)["s"]["rerun_reasons"] == [
        f"image {tag} changed: {image_a[:19]} -> {image_b[:19]}"]
    assert run(load(dags, "on_docker")).reused() == {"s": True}

