"""``ComputeTarget.identity(request)``: what the step cache key holds about where and with what a step runs.

- local: the venv as really built (interpreter real path and version, installed packages: tiny local
  wheels, tests/fixtures/envs.py), read from the venv's marker on later calls (no subprocess);
- docker (podman's Docker Engine API, ``integration``): the image resolved to its ID when the step runs,
  so a tag moved to another image is another identity, and the step then runs exactly that image;
- kubernetes: no Kubernetes API server can run on these machines (shared/ENVIRONMENT.md), and the
  identity needs none: these tests check the identity the target builds from its config and request.

In every target: what reaches the step process is in (env values as digests, mounts, user, python
command, secrets' names...), what cannot change a result is out (resources, placement, timeouts...).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_mlpipe.compute import StepRequest, get_target
from tests.fixtures.envs import PACKAGE, make_wheel, processes_started, requirements_file

from .conftest import STEP_IMAGE, script_request

BASE = sys.executable


def plain_request(**kwargs) -> StepRequest:
    return StepRequest(context={"step": "s"}, **kwargs)


# -- local ------------------------------------------------------------------------------------------
def test_local_identity_is_the_built_venv_and_a_second_call_runs_nothing(local_config, tmp_path):
    wheels = tmp_path / "wheels"
    make_wheel(wheels, version="1.0")
    req = requirements_file(tmp_path / "requirements.txt", wheels, PACKAGE)
    config = dict(local_config, venv_dir=str(tmp_path / "venvs"), inherit_env=["OMP_NUM_THREADS"])
    request = plain_request(python=BASE, requirements_file=str(req), env={"FOO": "secret-1"})
    target = get_target("local", config)
    identity = target.identity(request)  # builds the venv: the step needs it anyway
    version = subprocess.run([BASE, "-c", "import platform; print(platform.python_version())"],
                             capture_output=True, text=True, check=True).stdout.strip()
    env = identity["environment"]
    assert env["python"] == os.path.realpath(BASE) and env["python_version"] == version
    assert env["packages"] == [f"{PACKAGE}==1.0"]
    assert set(env["env"]) == {"FOO"} and "secret-1" not in json.dumps(identity)  # values as digests only
    assert identity["compute"] == {"type": "local", "inherit_env": ["OMP_NUM_THREADS"]}
    with processes_started() as started:
        again = get_target("local", config)
        assert again.identity(request) == identity
    assert started == []
    # the target built for the identity runs the step with the very venv it described
    assert target.venv is not None and target.venv.path.name in target.prepare_python(request)


def test_local_identity_changes_with_env_values_and_names_but_not_with_worker_settings(local_config):
    def identity(config=None, **kwargs):
        return get_target("local", dict(local_config, **(config or {}))).identity(plain_request(python=BASE, **kwargs))

    base = identity(env={"FOO": "1"})
    assert identity(env={"FOO": "2"})["environment"]["env"]["FOO"] != base["environment"]["env"]["FOO"]
    assert identity(env={"FOO": "1", "BAR": "x"}) != base
    assert identity(config={"inherit_env": ["OMP_NUM_THREADS"]}, env={"FOO": "1"}) != base
    same = identity(config={"kill_grace": 99, "scratch_dir": "/tmp/elsewhere", "keep_scratch": True},
                    env={"FOO": "1"}, resources={"cpu": 8, "memory": "64Gi"}, timeout=5)
    assert same == base


def test_local_identity_without_isolation_is_the_interpreter_itself(local_config, tmp_path):
    config = dict(local_config, isolated=False, venv_dir=str(tmp_path / "venvs"))
    identity = get_target("local", config).identity(plain_request(python=BASE))
    assert identity["environment"]["python"] == os.path.realpath(BASE)
    assert "pytest==" + pytest.__version__ in identity["environment"]["packages"]


# -- kubernetes (no API server: the identity is built from config and request alone) ------------------
K8S_IMAGE = "registry.example.com/ml/train:1.4"
K8S_DIGEST = "registry.example.com/ml/train@sha256:" + "ab" * 32


def k8s_identity(config=None, **kwargs):
    kwargs.setdefault("image", K8S_IMAGE)
    return get_target("kubernetes", config or {}).identity(plain_request(**kwargs))


def test_kubernetes_identity_keeps_what_reaches_the_pod_and_nothing_else():
    base = k8s_identity({"env_from_secrets": ["s3"]}, env={"FOO": "1"})
    assert base["environment"]["image"] == K8S_IMAGE and base["environment"]["python"] == "python3"
    assert base["compute"] == {"type": "kubernetes", "env_from_secrets": ["s3"], "workspace_pvc": None}
    pinned = k8s_identity({"env_from_secrets": ["s3"]}, env={"FOO": "1"}, image=K8S_DIGEST)
    assert pinned["environment"]["image"] == K8S_DIGEST  # a pinned digest is the image's identity
    changes = [
        k8s_identity({"env_from_secrets": ["s3"]}, env={"FOO": "2"}),
        k8s_identity({"env_from_secrets": ["s3", "extra"]}, env={"FOO": "1"}),
        k8s_identity({"env_from_secrets": ["s3"], "python": "python3.12"}, env={"FOO": "1"}),
        k8s_identity({"env_from_secrets": ["s3"], "workspace_pvc": "ws-claim"}, env={"FOO": "1"}),
        k8s_identity({"env_from_secrets": ["s3"]}, env={"FOO": "1"}, image="registry.example.com/ml/train:1.5"),
    ]
    assert all(c != base for c in changes) and len({json.dumps(c, sort_keys=True) for c in changes}) == 5
    unchanged = k8s_identity(
        {"env_from_secrets": ["s3"], "namespace": "other", "cpu": 8, "memory": "64Gi", "gpu": 4, "cpu_limit": 9,
         "node_selector": {"pool": "gpu"}, "tolerations": [{"key": "spot", "operator": "Exists"}],
         "service_account": "runner", "image_pull_secrets": ["cred"], "kill_grace": 99, "labels": {"a": "b"},
         "annotations": {"c": "d"}, "startup_timeout": 5, "poll_interval": 3, "kubernetes_conn_id": "k2",
         "image_pull_policy": "Always", "keep_pod": True},
        env={"FOO": "1"}, resources={"cpu": 2, "gpu": 1}, timeout=60)
    assert unchanged == base


# -- docker (podman) --------------------------------------------------------------------------------
@pytest.mark.integration
def test_docker_identity_resolves_the_tag_when_the_step_runs(docker_url, moving_tag, workspace, src_dir):
    tag, image_a, move = moving_tag
    target = get_target("docker", {"docker_url": docker_url})
    first = target.identity(plain_request(image=tag))
    assert first["environment"]["image"] == tag and first["environment"]["image_id"] == image_a
    image_b = move("B")
    assert image_b != image_a
    target = get_target("docker", {"docker_url": docker_url})
    body = "import pathlib\nprint('content:', pathlib.Path('/mlpipe-idtest.txt').read_text(), flush=True)\n"
    request = script_request(workspace, src_dir, "which.py", body, image=tag)
    second = target.identity(request)
    assert second["environment"]["image_id"] == image_b
    move("C")  # the tag moves again between the key and the run: the step still runs what the key says
    lines: list[str] = []
    assert target.run(request, lines.append) == 0, lines
    assert "content: B" in lines


@pytest.mark.integration
def test_docker_identity_keeps_what_reaches_the_container_and_nothing_else(docker_url):
    def identity(config=None, **kwargs):
        kwargs.setdefault("image", STEP_IMAGE)
        return get_target("docker", {"docker_url": docker_url, **(config or {})}).identity(plain_request(**kwargs))

    base = identity({"env": {"A": "1"}, "mounts": ["/tmp:/data:ro"]}, env={"FOO": "1"})
    assert set(base["environment"]["env"]) == {"A", "FOO"} and base["environment"]["python"] == "python3"
    assert base["compute"] == {"type": "docker", "mounts": ["/tmp:/data:ro"], "user": None}
    changes = [
        identity({"env": {"A": "2"}, "mounts": ["/tmp:/data:ro"]}, env={"FOO": "1"}),
        identity({"env": {"A": "1"}, "mounts": ["/tmp:/data:ro"]}, env={"FOO": "2"}),
        identity({"env": {"A": "1"}, "mounts": ["/tmp:/data"]}, env={"FOO": "1"}),
        identity({"env": {"A": "1"}, "mounts": ["/tmp:/data:ro"], "user": "1000"}, env={"FOO": "1"}),
        identity({"env": {"A": "1"}, "mounts": ["/tmp:/data:ro"], "python": "python3.11"}, env={"FOO": "1"}),
    ]
    assert all(c != base for c in changes) and len({json.dumps(c, sort_keys=True) for c in changes}) == 5
    unchanged = identity({"env": {"A": "1"}, "mounts": ["/tmp:/data:ro"], "network_mode": "host", "kill_grace": 1,
                          "timeout": 30, "shm_size": "1g", "extra_hosts": {"h": "127.0.0.1"}, "pull": "never"},
                         env={"FOO": "1"}, resources={"cpu": 1, "memory": "1Gi"}, timeout=9)
    assert unchanged == base


def test_default_identity_of_a_target_without_its_own_is_conservative():
    """A registered target that does not describe itself keys on its whole config and request."""
    from airflow_mlpipe.compute import ComputeTarget, register_target

    class Plain(ComputeTarget):
        type_name = "plain-identity"

        def run(self, request, on_log):
            return 0

        def kill(self):
            pass

    register_target("plain-identity", Plain)
    request = plain_request(python="python3", image="img:1", env={"FOO": "1"}, requirements=["six"])
    one = get_target("plain-identity", {"zone": "a"}).identity(request)
    assert one != get_target("plain-identity", {"zone": "b"}).identity(request)
    assert set(one["environment"]["env"]) == {"FOO"} and one["environment"]["env"]["FOO"] != "1"
    assert one["compute"]["type"] == "plain-identity"

