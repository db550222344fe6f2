"""``kubernetes`` compute: the step runs in a pod (cpu/memory/GPU, node selector, tolerations).

``build_pod(request, config)`` makes the ``V1Pod`` without contacting any cluster (unit-testable);
``KubernetesTarget.run`` creates it through the cncf.kubernetes provider's ``KubernetesHook``
(connection ``kubernetes_conn_id``, default ``kubernetes_default``), streams its log, waits for the
end, reads the container's exit code and deletes the pod; ``kill()`` deletes the pod.

The image needs ``python3`` only: the runtime travels in ``MLPIPE_RUNTIME_ZIP_B64`` (an env var,
~40 KB) and ``runtime.bundle.bootstrap_command`` runs it. The workspace should be S3; a ``file://``
workspace works only with ``workspace_pvc`` (a claim mounted at the workspace path).

Config keys: ``namespace`` (default ``default``), ``kubernetes_conn_id``, ``service_account``,
``cpu``, ``memory``, ``gpu`` (used when the step sets no ``resources`` of that kind), ``cpu_limit``,
``memory_limit``, ``node_selector`` (dict), ``tolerations`` (list of dicts, snake_case or camelCase keys),
``image_pull_secrets`` (names), ``image_pull_policy``, ``labels``, ``annotations``,
``env_from_secrets`` (secret names exposed as env vars, e.g. S3 credentials), ``gpu_resource``
(default ``nvidia.com/gpu``), ``python``, ``workspace_pvc``, ``startup_timeout`` (s, default 600),
``kill_grace`` (s, default 10), ``poll_interval`` (s, default 1), ``keep_pod`` (debugging).

Credentials: the workspace connection's S3 keys (``StepRequest.credentials``) are never written into the pod
spec (anyone who may read pods would read them). The pod gets them from the Secrets named in
``env_from_secrets`` (holding ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``), or needs none with a
``service_account`` bound to a cloud role; with neither, ``build_pod`` refuses the step (ComputeSetupError).

Identity (cache key): the image reference as written (no cluster or registry is asked: pin it with
``@sha256:...`` so that it names one image; a tag may move), the python command, the env (values as
digests), the ``env_from_secrets`` names and ``workspace_pvc``. Resources, placement, namespace,
labels, service account, pull secrets and timeouts stay out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from typing import Any

from airflow_mlpipe.compute.base import (
    ComputeTarget,
    LineSplitter,
    LogCallback,
    StepRequest,
    StepTimedOut,
    env_identity,
    parse_cpu,
    parse_memory,
)
from airflow_mlpipe.compute.docker import container_python, workspace_local_root
from airflow_mlpipe.errors import ComputeError, ComputeSetupError

log = logging.getLogger(__name__)

CONTAINER = "step"
WORKDIR = "/mlpipe/work"
LABEL_PREFIX = "mlpipe.airflow.apache.org"
_TOLERATION_KEYS = {"key": "key", "operator": "operator", "value": "value", "effect": "effect",
                    "toleration_seconds": "toleration_seconds", "tolerationSeconds": "toleration_seconds"}


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of [A-Za-z0-9._-], alphanumeric at both ends). Values that
    had to be changed get a short hash suffix so two different inputs stay different."""
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", str(text))
    if clean == text and len(clean) <= 63 and (not clean or (clean[0].isalnum() and clean[-1].isalnum())):
        return clean
    suffix = hashlib.sha256(str(text).encode()).hexdigest()[:8]
    body = clean[: 63 - 9].strip("._-")
    return f"{body}-{suffix}" if body else suffix


def pod_name(request: StepRequest) -> str:
    """A DNS-1123 name (<= 63 chars): mlpipe-<pipeline>-<step>-<random>."""
    base = re.sub(r"[^a-z0-9-]+", "-", f"mlpipe-{request.pipeline}-{request.step}".lower()).strip("-")
    return f"{base[:50].rstrip('-')}-{uuid.uuid4().hex[:8]}"


def _quantity_cpu(value: Any) -> str:
    cpus = parse_cpu(value)
    return str(int(cpus)) if cpus == int(cpus) else f"{int(round(cpus * 1000))}m"


def _quantity_memory(value: Any) -> str:
    if isinstance(value, str):
        parse_memory(value)  # validate
        return value.strip()
    return str(parse_memory(value))


def _toleration(doc: dict[str, Any]) -> Any:
    from kubernetes.client import V1Toleration

    unknown = set(doc) - set(_TOLERATION_KEYS)
    if unknown:
        raise ValueError(f"kubernetes compute: unknown toleration field(s) {sorted(unknown)} in {doc!r}")
    return V1Toleration(**{_TOLERATION_KEYS[k]: v for k, v in doc.items()})


def build_pod(request: StepRequest, config: dict[str, Any] | None = None) -> Any:
    """The ``kubernetes.client.V1Pod`` that runs ``request`` (no cluster contact, no kube config)."""
    from kubernetes import client as k8s

    from airflow_mlpipe.runtime.bundle import bootstrap_command, runtime_env

    config = dict(config or {})
    if not request.image:
        raise ComputeSetupError(f"step {request.step!r} runs on kubernetes compute but its environment names no image")
    env = dict(request.env)  # never request.credentials: a pod spec is readable by whoever may list pods
    if request.credentials and not (config.get("env_from_secrets") or config.get("service_account")):
        raise ComputeSetupError(
            f"step {request.step!r} runs on kubernetes compute and its workspace connection holds S3 credentials "
            f"({', '.join(sorted(request.credentials))}); a pod never gets them as plain environment values. Put them in "
            "a Kubernetes Secret (kubectl create secret generic mlpipe-s3 --from-literal=AWS_ACCESS_KEY_ID=... "
            "--from-literal=AWS_SECRET_ACCESS_KEY=...) and name it in the compute entry's env_from_secrets, or give "
            "the pod a service_account that may read the bucket (IRSA, workload identity)")
    env.update(runtime_env())
    env["MLPIPE_CONTEXT"] = json.dumps(request.context, sort_keys=True)
    env["PYTHONUNBUFFERED"] = "1"
    env_vars = [k8s.V1EnvVar(name=name, value=value) for name, value in sorted(env.items())]
    env_from = [
        k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=name)) for name in config.get("env_from_secrets") or []
    ]

    # the step's resources first, else the compute entry's cpu/memory/gpu (its *_limit keys override limits)
    resources = {k: (request.resources or {}).get(k, config.get(k)) for k in ("cpu", "memory", "gpu")}
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.get("cpu") is not None:
        requests["cpu"] = limits["cpu"] = _quantity_cpu(resources["cpu"])
    if resources.get("memory") is not None:
        requests["memory"] = limits["memory"] = _quantity_memory(resources["memory"])
    if config.get("cpu_limit") is not None:
        limits["cpu"] = _quantity_cpu(config["cpu_limit"])
    if config.get("memory_limit") is not None:
        limits["memory"] = _quantity_memory(config["memory_limit"])
    if resources.get("gpu"):
        gpus = int(resources["gpu"])
        if gpus < 0:
            raise ValueError(f"gpu must be >= 0, got {gpus}")
        limits[config.get("gpu_resource", "nvidia.com/gpu")] = str(gpus)

    volumes = [k8s.V1Volume(name="work", empty_dir=k8s.V1EmptyDirVolumeSource())]
    mounts = [k8s.V1VolumeMount(name="work", mount_path=WORKDIR)]
    root = workspace_local_root(request.context.get("workspace"))
    if root and config.get("workspace_pvc"):
        volumes.append(k8s.V1Volume(
            name="workspace",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(claim_name=config["workspace_pvc"]),
        ))
        mounts.append(k8s.V1VolumeMount(name="workspace", mount_path=root))

    container = k8s.V1Container(
        name=CONTAINER,
        image=request.image,
        image_pull_policy=config.get("image_pull_policy"),
        command=bootstrap_command(container_python(request, config)),
        env=env_vars,
        env_from=env_from or None,
        working_dir=WORKDIR,
        volume_mounts=mounts,
        resources=k8s.V1ResourceRequirements(requests=requests or None, limits=limits or None),
    )
    labels = {str(k): label_value(v) for k, v in (config.get("labels") or {}).items()}
    labels.update({
        "app.kubernetes.io/managed-by": "airflow-mlpipe",
        f"{LABEL_PREFIX}/pipeline": label_value(request.pipeline),
        f"{LABEL_PREFIX}/run-id": label_value(request.run_id),
        f"{LABEL_PREFIX}/step": label_value(request.step),
        f"{LABEL_PREFIX}/attempt": str(request.attempt),
    })
    annotations = {str(k): str(v) for k, v in (config.get("annotations") or {}).items()}
    annotations.update({
        f"{LABEL_PREFIX}/pipeline": request.pipeline,
        f"{LABEL_PREFIX}/run-id": request.run_id,
        f"{LABEL_PREFIX}/step": request.step,
    })
    spec = k8s.V1PodSpec(
        containers=[container],
        restart_policy="Never",
        volumes=volumes,
        node_selector=dict(config["node_selector"]) if config.get("node_selector") else None,
        tolerations=[_toleration(t) for t in config.get("tolerations") or []] or None,
        service_account_name=config.get("service_account"),
        image_pull_secrets=[k8s.V1LocalObjectReference(name=n) for n in config.get("image_pull_secrets") or []] or None,
        active_deadline_seconds=int(request.timeout) if request.timeout else None,
    )
    metadata = k8s.V1ObjectMeta(
        name=pod_name(request),
        namespace=config.get("namespace", "default"),
        labels=labels,
        annotations=annotations,
    )
    return k8s.V1Pod(api_version="v1", kind="Pod", metadata=metadata, spec=spec)


class KubernetesTarget(ComputeTarget):
    type_name = "kubernetes"

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self._lock = threading.Lock()
        self._api: Any = None
        self._pod: tuple[str, str] | None = None  # (namespace, name)
        self._deleted = False

    def identity(self, request: StepRequest, on_log: LogCallback | None = None) -> dict[str, Any]:
        """Built from the config and the request alone (no cluster contact)."""
        if not request.image:
            raise ComputeError(f"step {request.step!r} runs on kubernetes compute but its environment names no image")
        return {
            "environment": {"image": request.image, "python": container_python(request, self.config),
                            "env": env_identity(request.env)},
            "compute": {"type": self.type_name, "env_from_secrets": list(self.config.get("env_from_secrets") or []),
                        "workspace_pvc": self.config.get("workspace_pvc")},
        }

    def _core_v1(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        hook = KubernetesHook(conn_id=self.config.get("kubernetes_conn_id", "kubernetes_default"))
        return hook.core_v1_client

    def run(self, request: StepRequest, on_log: LogCallback) -> int:
        if self.killed:
            raise ComputeError(f"step {request.step!r} was killed before it started")
        pod = build_pod(request, self.config)
        namespace, name = pod.metadata.namespace, pod.metadata.name
        api = self._core_v1()
        deadline = time.monotonic() + request.timeout if request.timeout else None
        try:
            try:
                api.create_namespaced_pod(namespace=namespace, body=pod)
            except Exception as exc:
                raise ComputeError(f"kubernetes compute: cannot create pod {namespace}/{name}: {exc}") from exc
            with self._lock:
                self._api, self._pod = api, (namespace, name)
                if self.killed:
                    raise ComputeError(f"step {request.step!r} was killed before it started")
            on_log(f"mlpipe: pod {namespace}/{name} created")
            self._wait_started(api, namespace, name, deadline)
            if not self.killed:
                self._stream_logs(api, namespace, name, on_log)
            code = self._wait_finished(api, namespace, name, deadline)
        finally:
            if not self.config.get("keep_pod"):
                self._delete(grace=0)
        if deadline is not None and time.monotonic() >= deadline and code != 0:
            raise StepTimedOut(
                f"step {request.step!r} of pipeline {request.pipeline!r} ran longer than its timeout "
                f"({request.timeout:g} s); pod {namespace}/{name} was stopped",
                timeout=request.timeout,
            )
        return code

    def _wait_started(self, api: Any, namespace: str, name: str, deadline: float | None) -> None:
        limit = time.monotonic() + float(self.config.get("startup_timeout", 600))
        while not self.killed:
            pod = api.read_namespaced_pod(name=name, namespace=namespace)
            if pod.status.phase in ("Running", "Succeeded", "Failed"):
                return
            reason = _waiting_reason(pod)
            if reason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"):
                raise ComputeError(f"kubernetes compute: pod {namespace}/{name} cannot start: {reason}")
            now = time.monotonic()
            if now > limit or (deadline is not None and now > deadline):
                raise ComputeError(f"kubernetes compute: pod {namespace}/{name} still {pod.status.phase} "
                                   f"({reason or 'no reason given'}) after the startup timeout")
            time.sleep(float(self.config.get("poll_interval", 1.0)))

    def _stream_logs(self, api: Any, namespace: str, name: str, on_log: LogCallback) -> None:
        splitter = LineSplitter(on_log)
        try:
            resp = api.read_namespaced_pod_log(
                name=name, namespace=namespace, container=CONTAINER, follow=True, _preload_content=False
            )
            for chunk in resp.stream(amt=65536, decode_content=False):
                splitter.feed(chunk)
        except Exception as exc:  # a deleted pod ends the stream with an error
            if not self.killed:
                on_log(f"mlpipe: log stream of pod {namespace}/{name} ended: {exc}")
        splitter.close()

    def _wait_finished(self, api: Any, namespace: str, name: str, deadline: float | None) -> int:
        while True:
            try:
                pod = api.read_namespaced_pod(name=name, namespace=namespace)
            except Exception as exc:
                if self.killed:
                    return 137
                raise ComputeError(f"kubernetes compute: lost pod {namespace}/{name}: {exc}") from exc
            if pod.status.phase in ("Succeeded", "Failed"):
                for status in pod.status.container_statuses or []:
                    if status.name == CONTAINER and status.state and status.state.terminated:
                        return int(status.state.terminated.exit_code)
                return 0 if pod.status.phase == "Succeeded" else 1
            if self.killed:
                return 137
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                return 137
            time.sleep(float(self.config.get("poll_interval", 1.0)))

    def _delete(self, grace: int) -> None:
        with self._lock:
            if self._pod is None or self._deleted:
                return
            self._deleted = True
            api, (namespace, name) = self._api, self._pod
        try:
            api.delete_namespaced_pod(name=name, namespace=namespace, grace_period_seconds=grace)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return  # already gone
            # never silent: the pod may still be running (its step stops itself when its lease lapses)
            log.error("could not delete pod %s in namespace %s (%s: %s); it may still be running: delete it with "
                      "`kubectl delete pod -n %s %s`", name, namespace, type(exc).__name__,
                      str(exc).splitlines()[0] if str(exc) else "", namespace, name)

    def kill(self) -> None:
        self._kill_requested.set()
        self._delete(grace=int(self.config.get("kill_grace", 10)))


def _waiting_reason(pod: Any) -> str | None:
    for status in (pod.status.container_statuses or []) if pod.status else []:
        if status.state and status.state.waiting:
            return status.state.waiting.reason
    return None
