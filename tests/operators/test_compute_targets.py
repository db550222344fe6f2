"""The same definition on different compute targets, wired through the factory and the operator.

- docker (podman's Docker Engine API, ``integration``): the quickstart's prep -> train runs under
  ``dag.test()`` on ``local`` and on ``docker``, switched by one line of YAML (``defaults.compute``), and
  produces the same output digests.
- kubernetes: no Kubernetes API server can run on these machines (shared/ENVIRONMENT.md), so the test
  stops at the pod the step WOULD create: YAML (GPU, node selector, tolerations, cpu/memory) -> DAG ->
  operator -> the operator's own StepRequest -> ``build_pod``; no kube config exists and any HTTP
  connection or kube config load fails the test.
"""

from __future__ import annotations

import pytest

from tests.fixtures.docker import STEP_IMAGE
from tests.operators.kit import EXAMPLES, activate, load, local_target, make_dags_folder, run


def two_targets(docker_url: str, compute: str) -> str:
    text = (EXAMPLES / "pipelines" / "quickstart.yaml").read_text()
    text = text.replace("compute:\n  local:\n    type: local\n",
                        "compute:\n  local:\n    type: local\n  podman:\n    type: docker\n"
                        f"    docker_url: {docker_url}\n")
    text = text.replace("    python: python3\n", f"    python: python3\n    image: {STEP_IMAGE}\n")
    assert "  compute: local\n" in text
    return text.replace("  compute: local\n", f"  compute: {compute}\n")  # the one-line switch


@pytest.mark.integration
def test_same_pipeline_on_local_and_docker_gives_same_digests(airflow_db, docker_url, tmp_path, monkeypatch):
    local_yaml, docker_yaml = two_targets(docker_url, "local"), two_targets(docker_url, "podman")
    changed = [(a, b) for a, b in zip(local_yaml.splitlines(), docker_yaml.splitlines(), strict=True) if a != b]
    assert changed == [("  compute: local", "  compute: podman")]
    digests, records = {}, {}
    for compute, text in (("local", local_yaml), ("podman", docker_yaml)):
        dags = make_dags_folder(tmp_path / compute / "dags", {"quickstart": text}, copy_quickstart_sources=True)
        target = local_target(tmp_path / compute / "ws")  # one workspace each: both really run
        activate(monkeypatch, dags, target)
        dag = load(dags, "quickstart")
        assert dag.task_dict["prep"].compute["type"] == ("local" if compute == "local" else "docker")
        result = run(dag, {"rows": 400, "epochs": 5})
        assert result.state == "success", result.states
        assert result.ran() == {"prep", "train"}
        digests[compute] = {s: result.xcoms[s]["outputs"] for s in ("prep", "train")}
        digests[compute] = {s: {o: v["digest"] for o, v in outs.items()} for s, outs in digests[compute].items()}
        records[compute] = target.open().runs.get_run("mlpipe_quickstart", result.run_id)["steps"]
    assert {s: r["compute"] for s, r in records["podman"].items()} == {"prep": "docker", "train": "docker"}
    assert {s: r["compute"] for s, r in records["local"].items()} == {"prep": "local", "train": "local"}
    assert digests["local"] == digests["podman"]
    assert records["local"]["train"]["metrics"]["accuracy"] == records["podman"]["train"]["metrics"]["accuracy"]


K8S_PIPELINE = """
pipeline: k8s_gpu
start_date: 2026-01-01
schedule: null
defaults: {compute: gpu_pool, environment: trainer, timeout: 2h}
compute:
  gpu_pool:
    type: kubernetes
    namespace: ml-jobs
    service_account: mlpipe-runner
    node_selector: {accelerator: nvidia-a100, pool: gpu}
    tolerations:
      - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
      - {key: spot, operator: Equal, value: "true", effect: NoExecute}
environments:
  trainer: {python: python3, image: "registry.example.com/ml/train:1.4"}
params:
  lr: {type: number, default: 0.1}
steps:
  train:
    script: train.py
    source_directory: ../src
    arguments: [--lr, "${params.lr}", --model, "${outputs.model}"]
    resources: {cpu: 4, memory: 16Gi, gpu: 2}
    outputs: {model: {}}
"""


@pytest.fixture
def no_cluster(monkeypatch, tmp_path):
    """No kube config anywhere, and any cluster contact is an error."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    import kubernetes.config
    import urllib3

    def forbidden(*args, **kwargs):
        raise AssertionError("building the operator or the pod must not contact a cluster")

    monkeypatch.setattr(kubernetes.config, "load_kube_config", forbidden)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", forbidden)
    monkeypatch.setattr(urllib3.PoolManager, "urlopen", forbidden)
    monkeypatch.setattr(urllib3.HTTPConnectionPool, "urlopen", forbidden)


def pod_of(op, ws, hook, run_id: str = "manual__2026-11-29T10:00:00+00:00"):
    from kubernetes.client import ApiClient

    from airflow_mlpipe.compute.kubernetes import build_pod
    from airflow_mlpipe.operators import resolve
    from airflow_mlpipe.operators.steprun import StepRun

    params = {"lr": 0.1}
    run = StepRun.outside_airflow(op, ws, run_id, params, hook=hook)
    plan = resolve.plan_step(run, params)
    request = resolve.step_request(run, plan)
    return ApiClient().sanitize_for_serialization(build_pod(request, op.compute)), request


def test_kubernetes_step_from_yaml_to_pod(no_cluster, tmp_path, monkeypatch):
    """GPU, node selector, tolerations and resources written in YAML reach the pod spec."""
    from airflow_mlpipe.hooks.workspace import MlpipeHook

    dags = make_dags_folder(tmp_path / "dags", {"k8s_gpu": K8S_PIPELINE}, {"src/train.py": "print('train')\n"})
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, dags, target)
    op = load(dags, "k8s_gpu").task_dict["train"]  # building the DAG contacts nothing (see no_cluster)
    assert op.compute["type"] == "kubernetes" and op.compute["image"] == "registry.example.com/ml/train:1.4"

    pod, request = pod_of(op, target.open(), MlpipeHook())
    assert request.resources["gpu"] == 2
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert pod["metadata"]["namespace"] == "ml-jobs"
    assert spec["nodeSelector"] == {"accelerator": "nvidia-a100", "pool": "gpu"}
    assert spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoExecute"},
    ]
    assert spec["serviceAccountName"] == "mlpipe-runner"
    assert spec["activeDeadlineSeconds"] == 7200
    assert container["image"] == "registry.example.com/ml/train:1.4"
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert container["resources"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    import json

    launch = json.loads(env["MLPIPE_CONTEXT"])
    assert launch["step"] == "train" and launch["pipeline"] == "k8s_gpu"
    assert launch["argv"] == [["--lr"], ["0.1"], ["--model"], [{"output": "model"}]]
    assert pod["metadata"]["labels"]["mlpipe.airflow.apache.org/step"] == "train"


def test_kubernetes_compute_level_gpu_reaches_pod(no_cluster, tmp_path, monkeypatch):
    """``gpu``/``cpu``/``memory`` set on the kubernetes compute entry (not on the step) are documented
    compute fields (spec KubernetesCompute): the pod must ask for them too."""
    from airflow_mlpipe.hooks.workspace import MlpipeHook

    text = K8S_PIPELINE.replace("    resources: {cpu: 4, memory: 16Gi, gpu: 2}\n", "").replace(
        "    service_account: mlpipe-runner\n", "    service_account: mlpipe-runner\n    gpu: 1\n    cpu: 2\n"
        "    memory: 8Gi\n    memory_limit: 12Gi\n")
    dags = make_dags_folder(tmp_path / "dags", {"k8s_gpu": text}, {"src/train.py": "print('train')\n"})
    target = local_target(tmp_path / "ws")
    activate(monkeypatch, dags, target)
    op = load(dags, "k8s_gpu").task_dict["train"]
    pod, _ = pod_of(op, target.open(), MlpipeHook())
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"] == {"cpu": "2", "memory": "8Gi"}
    assert resources["limits"]["memory"] == "12Gi"
