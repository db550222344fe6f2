"""Compute targets (``compute:``, discriminated by ``type``) and environments (``environments:``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, field_validator

from airflow_mlpipe.spec.types import (
    STRICT,
    Cpu,
    Memory,
    PositiveNumber,
    StrMap,
    describe,
    none_to_empty_list,
)

_MOUNT_RE = re.compile(r"^[^:]+:/[^:]*(:(ro|rw))?$")


class LocalCompute(BaseModel):
    """Run the step as a subprocess on the Airflow worker, in a venv built for its environment."""

    model_config = STRICT

    type: Literal["local"] = Field(description="local")
    venv_dir: str | None = Field(
        None,
        description="Where environment venvs are built and cached (default: a per-user cache directory).",
    )
    isolated: bool = Field(
        True, description="Run in a venv built for the step's environment (false: the worker's own interpreter)."
    )
    use_uv: bool | None = Field(None, description="Build venvs with uv (default: when uv is installed).")
    inherit_env: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Names of worker environment variables the step also receives."
    )
    scratch_dir: str | None = Field(
        None, description="Where each attempt's working folder is made (default: $MLPIPE_SCRATCH_DIR or a temp dir)."
    )
    keep_scratch: bool = Field(False, description="Keep each attempt's working folder after it ends (debugging).")
    runtime_dir: str | None = Field(None, description="Where the step runtime is staged (default: a cache dir).")
    kill_grace: int = Field(10, ge=0, description="Seconds between SIGTERM and SIGKILL when a step is stopped.")


class DockerCompute(BaseModel):
    """Run the step in a container through the Docker Engine API."""

    model_config = STRICT

    type: Literal["docker"] = Field(description="docker")
    image: str | None = Field(None, description="Container image; defaults to the environment's image.")
    docker_url: str | None = Field(None, description="Docker Engine URL (default: the local socket).")
    cpus: PositiveNumber | None = Field(
        None, description="CPU limit (number of CPUs, may be fractional); a step's resources.cpu overrides it."
    )
    memory: Memory | None = Field(
        None, description="Memory limit, e.g. '512m' or '2g'; a step's resources.memory overrides it."
    )
    network_mode: str | None = Field(None, description="Docker network mode, e.g. 'bridge' or 'host'.")
    user: str | None = Field(None, description="User (name or uid[:gid]) the step runs as in the container.")
    extra_hosts: StrMap = Field(default_factory=dict, description="Extra /etc/hosts entries: {hostname: ip}.")
    shm_size: Memory | None = Field(None, description="Size of /dev/shm, e.g. '1g' (PyTorch data loaders need it).")
    pull: Literal["missing", "never"] = Field(
        "missing", description="Pull the image when it is not present ('missing'), or fail ('never')."
    )
    python: str | None = Field(None, description="Python interpreter in the image (default: python3).")
    timeout: int = Field(120, gt=0, description="Seconds to wait for an answer of the Docker Engine API.")
    kill_grace: int = Field(10, ge=0, description="Seconds between stop and kill when a step is stopped.")
    env: StrMap = Field(default_factory=dict, description="Extra environment variables in the container.")
    mounts: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Bind mounts 'host_path:/container/path[:ro]'."
    )

    @field_validator("mounts")
    @classmethod
    def _check_mounts(cls, value: list[str]) -> list[str]:
        for mount in value:
            if not _MOUNT_RE.match(mount):
                raise ValueError(
                    f"invalid mount {describe(mount)}: expected 'host_path:/container/path' or "
                    "'host_path:/container/path:ro'"
                )
        return value


class Toleration(BaseModel):
    """A Kubernetes pod toleration."""

    model_config = STRICT

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesCompute(BaseModel):
    """Run the step as a Kubernetes pod."""

    model_config = STRICT

    type: Literal["kubernetes"] = Field(description="kubernetes")
    namespace: str = Field("default", description="Namespace of the step pods.")
    image: str | None = Field(None, description="Container image; defaults to the environment's image.")
    cpu: Cpu | None = Field(None, description="CPU request, e.g. 2, 0.5 or '500m'.")
    memory: Memory | None = Field(None, description="Memory request, e.g. '2Gi'.")
    cpu_limit: Cpu | None = Field(None, description="CPU limit.")
    memory_limit: Memory | None = Field(None, description="Memory limit.")
    gpu: int = Field(0, ge=0, description="Number of GPUs (nvidia.com/gpu) requested.")
    node_selector: StrMap = Field(default_factory=dict, description="Node labels the pod must match.")
    tolerations: Annotated[list[Toleration], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Pod tolerations."
    )
    service_account: str | None = Field(None, description="Service account of the pod.")
    image_pull_secrets: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="Names of image pull secrets."
    )
    kubernetes_conn_id: str | None = Field(
        None, description="Airflow connection of the cluster (default: in-cluster)."
    )
    labels: StrMap = Field(default_factory=dict, description="Extra pod labels.")
    annotations: StrMap = Field(default_factory=dict, description="Extra pod annotations.")
    env_from_secrets: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list,
        description="Kubernetes Secrets whose keys become the step's environment variables (credentials: the "
        "pod refers to the Secret, the value never appears in the pod spec).",
    )
    workspace_pvc: str | None = Field(
        None, description="PersistentVolumeClaim that holds a file:// workspace, mounted at the same path."
    )
    gpu_resource: str = Field("nvidia.com/gpu", description="Extended resource name of a GPU.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="Image pull policy of the step container (default: Kubernetes' own)."
    )
    keep_pod: bool = Field(False, description="Keep the pod after the step ends (debugging).")
    startup_timeout: int = Field(600, gt=0, description="Seconds the pod may stay pending before the step fails.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between two reads of the pod's state.")
    kill_grace: int = Field(10, ge=0, description="Grace period (seconds) of the pod deletion when stopped.")


COMPUTE_TYPES: dict[str, type[BaseModel]] = {
    "local": LocalCompute,
    "docker": DockerCompute,
    "kubernetes": KubernetesCompute,
}
ComputeTarget = Annotated[LocalCompute | DockerCompute | KubernetesCompute, Field(discriminator="type")]


class EnvironmentSpec(BaseModel):
    """What the step's Python needs: an interpreter, pip requirements, and/or a container image."""

    model_config = STRICT

    python: str = Field("python3", description="Python interpreter used to build the venv (local compute).")
    requirements: Annotated[list[str], BeforeValidator(none_to_empty_list)] = Field(
        default_factory=list, description="pip requirement strings, e.g. 'scikit-learn==1.5.2'."
    )
    requirements_file: str | None = Field(
        None, description="A requirements.txt, relative to the directory of the YAML file."
    )
    image: str | None = Field(None, description="Container image for docker and kubernetes compute.")
    env: StrMap = Field(default_factory=dict, description="Environment variables set for the step.")

    @field_validator("requirements")
    @classmethod
    def _check_requirements(cls, value: list[Any]) -> list[Any]:
        for req in value:
            if not req.strip() or req.strip().startswith("-"):
                raise ValueError(
                    f"invalid requirement {describe(req)}: give a pip requirement like 'pandas>=2'; "
                    "pip options are not allowed here"
                )
        return value
