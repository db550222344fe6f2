"""The ``kubernetes`` compute target.

No Kubernetes API server can run on these machines (shared/ENVIRONMENT.md), so these tests validate the
pod that WOULD be created: ``build_pod`` output is serialised with ``ApiClient().sanitize_for_serialization``,
deserialised back into the Kubernetes ``V1Pod`` model (which validates it) and its fields checked, for a
step with a GPU, a node selector and tolerations. Building the pod must contact no cluster: the tests run
with no kube config at all, and any attempt to load one or to open an HTTP connection fails the test.
``run``/``kill`` are checked against a fake CoreV1 client (create, log stream, phase, exit code, delete).
"""

from __future__ import annotations

import json
import re

import pytest

from airflow_mlpipe.compute import StepRequest, get_target
from airflow_mlpipe.compute.kubernetes import CONTAINER, KubernetesTarget, build_pod, label_value
from airflow_mlpipe.runtime.bundle import RUNTIME_ZIP_ENV, bootstrap_command

from .conftest import make_context

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

CONFIG = {
    "namespace": "ml-jobs",
    "node_selector": {"accelerator": "nvidia-a100", "pool": "gpu"},
    "tolerations": [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 300},
    ],
    "service_account": "mlpipe-runner",
    "image_pull_secrets": ["registry-cred"],
    "labels": {"team": "ml platform"},
    "annotations": {"owner": "ml-team@example.com"},
    "env_from_secrets": ["s3-credentials"],
}


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch, tmp_path):
    """No kube config anywhere, and any cluster contact is an error."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    import kubernetes.config
    import urllib3

    def forbidden(*args, **kwargs):
        raise AssertionError("building a pod must not contact a cluster")

    monkeypatch.setattr(kubernetes.config, "load_kube_config", forbidden)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", forbidden)
    monkeypatch.setattr(urllib3.PoolManager, "urlopen", forbidden)
    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", forbidden)


def gpu_request(**kwargs) -> StepRequest:
    ctx = make_context("s3://bucket/ws", "train.py", [["--model"], [{"output": "model"}]], step="train_model",
                       run_id="manual__2026-11-22T10:00:00+00:00", pipeline="income_retrain",
                       outputs={"model": "outputs/income_retrain/x/train_model/model"})
    kwargs.setdefault("image", "registry.example.com/ml/train:1.4")
    kwargs.setdefault("resources", {"cpu": 4, "memory": "16Gi", "gpu": 2})
    kwargs.setdefault("timeout", 3600)
    kwargs.setdefault("env", {"MLPIPE_S3_ENDPOINT_URL": "http://minio:9000"})
    return StepRequest(context=ctx, **kwargs)


def roundtrip(pod):
    from kubernetes.client import ApiClient

    api = ApiClient()
    doc = api.sanitize_for_serialization(pod)

    class Response:
        data = json.dumps(doc)

    again = api.deserialize(Response(), "V1Pod")
    assert api.sanitize_for_serialization(again) == doc
    return doc


def test_gpu_pod_with_node_selector_and_tolerations():
    request = gpu_request()
    doc = roundtrip(build_pod(request, CONFIG))
    assert doc["apiVersion"] == "v1" and doc["kind"] == "Pod"
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["namespace"] == "ml-jobs"
    assert DNS_1123.match(meta["name"]) and len(meta["name"]) <= 63 and meta["name"].startswith("mlpipe-income-retrain-train-model-")
    for key, value in meta["labels"].items():
        assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
    assert meta["labels"]["mlpipe.airflow.apache.org/pipeline"] == "income_retrain"
    assert meta["labels"]["mlpipe.airflow.apache.org/step"] == "train_model"
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "airflow-mlpipe"
    assert meta["annotations"]["mlpipe.airflow.apache.org/run-id"] == "manual__2026-11-22T10:00:00+00:00"
    assert meta["annotations"]["owner"] == "ml-team@example.com"

    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 3600
    assert spec["nodeSelector"] == {"accelerator": "nvidia-a100", "pool": "gpu"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute", "tolerationSeconds": 300},
    ]
    assert spec["serviceAccountName"] == "mlpipe-runner"
    assert spec["imagePullSecrets"] == [{"name": "registry-cred"}]

    (container,) = spec["containers"]
    assert container["name"] == CONTAINER and container["image"] == "registry.example.com/ml/train:1.4"
    assert container["command"] == bootstrap_command("python3")
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"},
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert json.loads(env["MLPIPE_CONTEXT"]) == request.context
    assert env["MLPIPE_S3_ENDPOINT_URL"] == "http://minio:9000" and env["PYTHONUNBUFFERED"] == "1"
    assert len(env[RUNTIME_ZIP_ENV]) < 120_000
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert container["workingDir"] == "/mlpipe/work"
    assert {"name": "work", "emptyDir": {}} in spec["volumes"]


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY": "s3cr3t-v4lue/xyz",
               "AWS_SESSION_TOKEN": "session-token-value"}


@pytest.mark.parametrize("config", [{"env_from_secrets": ["s3-credentials"]}, {"service_account": "ml-irsa"}])
def test_workspace_credentials_never_reach_the_pod_spec(config):
    """The pod reads them from a Secret (or needs none with a service account bound to a cloud role)."""
    doc = roundtrip(build_pod(gpu_request(credentials=CREDENTIALS), {"image": "x", **config}))
    text = json.dumps(doc)
    for name, value in CREDENTIALS.items():
        assert value not in text, name
    (container,) = doc["spec"]["containers"]
    names = {e["name"] for e in container["env"]}
    assert not names & set(CREDENTIALS) and "MLPIPE_S3_ENDPOINT_URL" in names
    assert container.get("envFrom") == ([{"secretRef": {"name": "s3-credentials"}}] if "env_from_secrets" in config
                                        else None)


def test_a_pod_without_a_secret_for_the_credentials_is_refused():
    from airflow_mlpipe.errors import ComputeSetupError

    with pytest.raises(ComputeSetupError, match=r"S3 credentials \(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                                                r"AWS_SESSION_TOKEN\); a pod never gets them as plain environment "
                                                r"values.*env_from_secrets.*service_account") as caught:
        build_pod(gpu_request(credentials=CREDENTIALS), {})
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in str(caught.value)
    assert "s3cr3t" not in repr(gpu_request(credentials=CREDENTIALS))
    build_pod(gpu_request(), {})  # no credentials (a service account or a PVC workspace): nothing to hide


def test_minimal_pod_and_fractional_cpu():
    doc = roundtrip(build_pod(gpu_request(resources={"cpu": 0.5}, timeout=None), {}))
    assert doc["metadata"]["namespace"] == "default"
    spec = doc["spec"]
    assert "nodeSelector" not in spec and "tolerations" not in spec and "activeDeadlineSeconds" not in spec
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}}


def test_local_workspace_needs_a_volume_claim():
    request = gpu_request()
    request.context["workspace"] = "file:///srv/mlpipe"
    doc = roundtrip(build_pod(request, {"workspace_pvc": "mlpipe-ws"}))
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "mlpipe-ws"}} in doc["spec"]["volumes"]
    assert {"name": "workspace", "mountPath": "/srv/mlpipe"} in doc["spec"]["containers"][0]["volumeMounts"]


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown toleration"):
        build_pod(gpu_request(), {"tolerations": [{"key": "a", "tolerationSecs": 1}]})
    from airflow_mlpipe.errors import ComputeError

    with pytest.raises(ComputeError, match="names no image"):
        build_pod(gpu_request(image=None), {})


@pytest.mark.parametrize("text", ["manual__2026-11-22T10:00:00+00:00", "x" * 80, "-lead", "ok_value", "", "ünïcode"])
def test_label_values_are_valid_and_distinct(text):
    value = label_value(text)
    assert LABEL_VALUE.match(value) and len(value) <= 63
    assert label_value(text + "!") != value or text == ""


class FakeLogResponse:
    def __init__(self, chunks):
        self.chunks = chunks

    def stream(self, amt=None, decode_content=None):
        yield from self.chunks


class FakeCoreV1:
    """Pending -> Running -> Succeeded/Failed with an exit code; records every call."""

    def __init__(self, exit_code=0, phases=("Pending", "Running")):
        from kubernetes import client as k8s

        self.k8s = k8s
        self.calls: list[tuple] = []
        self.exit_code = exit_code
        self.phases = list(phases)
        self.created = None

    def create_namespaced_pod(self, namespace, body):
        self.calls.append(("create", namespace, body.metadata.name))
        self.created = body

    def read_namespaced_pod(self, name, namespace):
        self.calls.append(("read", name))
        k8s = self.k8s
        if self.phases:
            phase = self.phases.pop(0)
            return k8s.V1Pod(status=k8s.V1PodStatus(phase=phase))
        final = "Succeeded" if self.exit_code == 0 else "Failed"
        term = k8s.V1ContainerStateTerminated(exit_code=self.exit_code)
        status = k8s.V1ContainerStatus(name=CONTAINER, state=k8s.V1ContainerState(terminated=term), image="i",
                                       image_id="", ready=False, restart_count=0)
        return k8s.V1Pod(status=k8s.V1PodStatus(phase=final, container_statuses=[status]))

    def read_namespaced_pod_log(self, name, namespace, container, follow, _preload_content):
        self.calls.append(("logs", name, container, follow))
        return FakeLogResponse([b"epoch 0\nepo", b"ch 1\n", b"done"])

    def delete_namespaced_pod(self, name, namespace, grace_period_seconds):
        self.calls.append(("delete", name, grace_period_seconds))


@pytest.mark.parametrize("exit_code", [0, 3])
def test_run_creates_streams_waits_and_deletes(monkeypatch, exit_code):
    fake = FakeCoreV1(exit_code=exit_code)
    target = get_target("kubernetes", {"namespace": "ml", "poll_interval": 0.01})
    assert isinstance(target, KubernetesTarget)
    monkeypatch.setattr(target, "_core_v1", lambda: fake)
    lines: list[str] = []
    assert target.run(gpu_request(), lines.append) == exit_code
    assert lines[1:] == ["epoch 0", "epoch 1", "done"]
    kinds = [c[0] for c in fake.calls]
    assert kinds[0] == "create" and kinds[-1] == "delete" and "logs" in kinds
    assert fake.calls[-1][2] == 0
    target.kill()  # after the end: nothing left to delete
    assert [c[0] for c in fake.calls].count("delete") == 1


def test_kill_deletes_the_pod(monkeypatch):
    fake = FakeCoreV1(phases=["Running"] * 1000)
    target = get_target("kubernetes", {"poll_interval": 0.01, "kill_grace": 5})
    monkeypatch.setattr(target, "_core_v1", lambda: fake)

    def on_log(line):
        if line == "done":
            target.kill()

    assert target.run(gpu_request(), on_log) == 137
    deletes = [c for c in fake.calls if c[0] == "delete"]
    assert deletes == [("delete", fake.created.metadata.name, 5)]


@pytest.mark.parametrize("status", [404, 500])
def test_a_failed_pod_deletion_is_reported_and_a_vanished_pod_is_not(monkeypatch, caplog, status):
    """(Kubernetes API faked: no API server here.) A pod that is already gone is fine; any other failure to
    delete it is logged with the command that removes it by hand, never swallowed."""
    from kubernetes.client.exceptions import ApiException

    fake = FakeCoreV1()

    def refuse(name, namespace, grace_period_seconds):
        fake.calls.append(("delete", name, grace_period_seconds))
        raise ApiException(status=status, reason="Not Found" if status == 404 else "Internal Server Error")

    fake.delete_namespaced_pod = refuse
    target = get_target("kubernetes", {"namespace": "ml", "poll_interval": 0.01})
    monkeypatch.setattr(target, "_core_v1", lambda: fake)
    with caplog.at_level("ERROR", logger="airflow_mlpipe.compute.kubernetes"):
        assert target.run(gpu_request(), lambda line: None) == 0
    name = fake.created.metadata.name
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    if status == 404:
        assert errors == []
    else:
        assert len(errors) == 1 and f"kubectl delete pod -n ml {name}" in errors[0] and "ApiException" in errors[0]
