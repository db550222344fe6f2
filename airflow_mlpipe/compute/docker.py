"""``docker`` compute: the step runs in a container started through the Docker Engine API.

Uses the ``docker`` Python client (the one Airflow's docker provider uses); podman's Docker-compatible
service works too (shared/ENVIRONMENT.md). The image needs ``python3`` only: the runtime travels in
the environment variable ``MLPIPE_RUNTIME_ZIP_B64`` and ``runtime.bundle.bootstrap_command`` runs it.

Config keys (the pipeline's compute entry): ``docker_url`` (default ``$DOCKER_HOST``, else the
client's default), ``network_mode`` (e.g. ``host`` for an S3 endpoint on the worker's loopback),
``python`` (command in the image, default ``python3``), ``user``, ``env`` (extra variables in the
container; the environment's ``env`` and the workspace credentials win over them), ``mounts`` (list
of ``"src:dst[:ro]"``), ``extra_hosts``, ``shm_size``, ``pull`` (``missing`` (default) | ``never``),
``kill_grace`` (seconds, default 10), ``timeout`` (API timeout, default 120).

A ``file://`` workspace is bind-mounted at the same path in the container, so the datastore's
``local_path`` works inside as outside. ``request.workdir`` (a prepared directory on the worker) is
bind-mounted the same way and used as the container's working directory; otherwise the working
directory is ``/mlpipe/work`` inside the container.

Identity (cache key): the image reference and the ID it resolves to when the step is planned (one
Engine API call; over a unix socket a plain HTTP GET, so no client version negotiation, which costs
podman about 2 s), the python command, the container env (the compute's ``env`` under the request's;
values as digests), ``mounts`` and ``user``. The step then runs that image ID, so a tag moved in
between cannot run something else than the key says. Network, resources, pull policy and timeouts
stay out.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.parse
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
    start_timeout,
)
from airflow_mlpipe.compute.reaper import Reaper
from airflow_mlpipe.errors import ComputeError, ComputeSetupError

CONTAINER_WORKDIR = "/mlpipe/work"


def container_name(request: StepRequest) -> str:
    base = f"mlpipe-{request.pipeline}-{request.step}-{request.attempt}"
    clean = re.sub(r"[^a-zA-Z0-9_.-]", "-", base)[:100].strip("-.") or "mlpipe-step"
    return f"{clean}-{uuid.uuid4().hex[:8]}"


def workspace_local_root(workspace_uri: str | None) -> str | None:
    """The directory of a ``file://`` (or plain absolute path) workspace; None for S3."""
    if not workspace_uri:
        return None
    parsed = urllib.parse.urlparse(workspace_uri)
    if parsed.scheme == "file":
        return os.path.realpath(urllib.parse.unquote(parsed.path))
    if not parsed.scheme and workspace_uri.startswith("/"):
        return os.path.realpath(workspace_uri)
    return None


def container_python(request: StepRequest, config: dict[str, Any]) -> str:
    if config.get("python"):
        return str(config["python"])
    return request.python if request.python and "/" not in request.python else "python3"


class DockerTarget(ComputeTarget):
    type_name = "docker"

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__(config)
        self._lock = threading.Lock()
        self._container: Any = None
        self._stopping = False
        self._image_ids: dict[str, str] = {}  # image reference -> ID resolved by identity()

    def _base_url(self) -> str | None:
        return self.config.get("docker_url") or os.environ.get("DOCKER_HOST")

    def _client(self) -> Any:
        try:
            import docker
        except ImportError as exc:
            raise ComputeSetupError("the docker compute target needs the 'docker' package (pip install docker)") from exc
        base_url = self._base_url()
        try:
            if base_url:
                return docker.DockerClient(base_url=base_url, timeout=int(self.config.get("timeout", 120)))
            return docker.from_env(timeout=int(self.config.get("timeout", 120)))
        except Exception as exc:
            raise ComputeError(
                f"cannot reach the Docker Engine at {base_url or 'the default socket'}: {exc}; set the compute's "
                "'docker_url' (or DOCKER_HOST); on machines without Docker run scripts/setup_podman.sh"
            ) from exc

    def _base_url(self) -> str:
        return str(self.config.get("docker_url") or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock")

    def _inspect_over_socket(self, image: str) -> str | None:
        """The ID of ``image`` by one ``GET /images/<ref>/json`` on the Engine's unix socket (unversioned
        path: the engine's own API version); None if it is absent or the engine is not a unix socket."""
        import http.client

        base_url = self._base_url()
        if not base_url.startswith("unix://"):
            return None
        path, timeout = base_url[len("unix://"):], float(self.config.get("timeout", 120))

        class UnixConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(path)

        conn = UnixConnection("localhost", timeout=timeout)
        try:
            conn.request("GET", f"/images/{urllib.parse.quote(image, safe='/:')}/json")
            response = conn.getresponse()
            body = response.read()
        except OSError as exc:
            raise ComputeError(
                f"cannot reach the Docker Engine at {base_url}: {exc}; set the compute's 'docker_url' (or "
                "DOCKER_HOST); on machines without Docker run scripts/setup_podman.sh"
            ) from exc
        finally:
            conn.close()
        if response.status == 404:
            return None
        try:
            return str(json.loads(body)["Id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ComputeError(f"docker compute: cannot inspect image {image!r} at {base_url}: HTTP "
                               f"{response.status} {body[:300]!r}") from exc

    def image_id(self, image: str) -> str:
        """The ID ``image`` names now (pulled first if absent, as ``run`` would); ``run`` then uses it."""
        found = self._inspect_over_socket(image)
        if found is None:
            client = self._client()
            try:
                found = str(self._ensure_image(client, image).id)
            finally:
                client.close()
        self._image_ids[image] = found
        return found

    def identity(self, request: StepRequest, on_log: LogCallback | None = None) -> dict[str, Any]:
        if not request.image:
            raise ComputeError(f"step {request.step!r} runs on docker compute but its environment names no image")
        env = {str(k): str(v) for k, v in (self.config.get("env") or {}).items()}
        env.update(request.env)
        return {
            "environment": {"image": request.image, "image_id": self.image_id(request.image),
                            "python": container_python(request, self.config), "env": env_identity(env)},
            "compute": {"type": self.type_name, "mounts": [str(m) for m in self.config.get("mounts") or []],
                        "user": self.config.get("user")},
        }

    def container_spec(self, request: StepRequest) -> dict[str, Any]:
        """Keyword arguments for ``client.containers.create`` (no Engine call; unit-testable)."""
        import docker.types

        from airflow_mlpipe.runtime.bundle import bootstrap_command, runtime_env

        if not request.image:
            raise ComputeSetupError(f"step {request.step!r} runs on docker compute but its environment names no image")
        # the compute entry's ``env`` (DockerCompute.env), then the request's (environment env, workspace
        # endpoint) and the workspace credentials on top
        env = {str(k): str(v) for k, v in (self.config.get("env") or {}).items()}
        env.update(request.env)
        env.update(request.credentials)
        env.update(runtime_env())
        env["MLPIPE_CONTEXT"] = json.dumps(request.context, sort_keys=True)
        env["PYTHONUNBUFFERED"] = "1"
        mounts: list[Any] = []
        seen: set[str] = set()

        def bind(source: str, target: str, read_only: bool = False) -> None:
            if target not in seen:
                seen.add(target)
                mounts.append(docker.types.Mount(target=target, source=source, type="bind", read_only=read_only))

        root = workspace_local_root(request.context.get("workspace"))
        if root:
            bind(root, root)
        working_dir = CONTAINER_WORKDIR
        if request.workdir:
            working_dir = os.path.realpath(request.workdir)
            bind(working_dir, working_dir)
        for item in self.config.get("mounts") or []:
            parts = str(item).split(":")
            if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
                raise ComputeSetupError(f"docker compute: invalid mount {item!r}; expected 'source:target[:ro]'")
            bind(parts[0], parts[1], read_only=len(parts) == 3 and parts[2] == "ro")
        spec: dict[str, Any] = {
            "image": request.image,
            "command": bootstrap_command(container_python(request, self.config)),
            "environment": env,
            "working_dir": working_dir,
            "mounts": mounts,
            "name": container_name(request),
            "labels": {
                "mlpipe.pipeline": request.pipeline,
                "mlpipe.run_id": request.run_id,
                "mlpipe.step": request.step,
                "mlpipe.attempt": str(request.attempt),
            },
            "detach": True,
            "stdin_open": False,
            "tty": False,
        }
        resources = request.resources or {}
        cpu = resources["cpu"] if resources.get("cpu") is not None else self.config.get("cpus")
        memory = resources["memory"] if resources.get("memory") is not None else self.config.get("memory")
        if cpu is not None:  # the step's resources win over the target's limits
            spec["nano_cpus"] = int(parse_cpu(cpu) * 1e9)
        if memory is not None:
            spec["mem_limit"] = parse_memory(memory)
        if resources.get("gpu"):
            spec["device_requests"] = [docker.types.DeviceRequest(count=int(resources["gpu"]), capabilities=[["gpu"]])]
        for key in ("network_mode", "user", "extra_hosts", "shm_size"):
            if self.config.get(key):
                spec[key] = self.config[key]
        return spec

    def _ensure_image(self, client: Any, image: str) -> Any:
        import docker.errors

        try:
            return client.images.get(image)
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise ComputeError(f"docker compute: cannot inspect image {image!r}: {exc}") from exc
        if self.config.get("pull", "missing") == "never":
            raise ComputeSetupError(f"docker compute: image {image!r} is not present and pull is 'never'; build or load it")
        try:
            return client.images.pull(image)
        except Exception as exc:
            raise ComputeError(
                f"docker compute: image {image!r} is not present and could not be pulled: {exc}; build it "
                "(e.g. scripts/build_step_image.sh) or fix the environment's image"
            ) from exc

    def run(self, request: StepRequest, on_log: LogCallback) -> int:
        import docker.errors

        if self.killed:
            raise ComputeError(f"step {request.step!r} was killed before it started")
        spec = self.container_spec(request)
        spec["image"] = self._image_ids.get(spec["image"], spec["image"])  # the image the key describes
        client = self._client()
        timed_out = threading.Event()
        timer: threading.Timer | None = None
        container = None
        reaper: Reaper | None = None
        try:
            self._ensure_image(client, spec["image"])
            try:
                container = client.containers.create(**spec)
            except docker.errors.APIError as exc:
                raise ComputeError(f"docker compute: cannot create the container of step {request.step!r}: {exc}") from exc
            # the container is stopped and removed if this task process dies (compute/reaper.py)
            reaper = Reaper.start({"docker": {"base_url": self._base_url(), "container": container.id,
                                              "grace": int(self.config.get("kill_grace", 10))}})
            with self._lock:
                self._container = container
                if self.killed:
                    raise ComputeError(f"step {request.step!r} was killed before it started")
            container.start()
            timer = start_timeout(request.timeout, timed_out, self.kill)
            splitter = LineSplitter(on_log)
            for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                splitter.feed(chunk)
            splitter.close()
            status = container.wait()
            code = int(status.get("StatusCode", 1))
        except docker.errors.APIError as exc:
            if self.killed:
                return 137
            raise ComputeError(f"docker compute: step {request.step!r} failed in the engine: {exc}") from exc
        finally:
            if timer is not None:
                timer.cancel()
            if container is not None:
                try:
                    container.remove(force=True)
                except docker.errors.APIError:
                    pass
            with self._lock:
                self._container = None
            client.close()
            if reaper is not None:
                reaper.release()
        if timed_out.is_set():
            raise StepTimedOut(
                f"step {request.step!r} of pipeline {request.pipeline!r} ran longer than its timeout "
                f"({request.timeout:g} s) and its container was stopped",
                timeout=request.timeout,
            )
        return code

    def kill(self) -> None:
        self._kill_requested.set()
        with self._lock:
            container = self._container
            if container is None or self._stopping:
                return
            self._stopping = True
        grace = int(self.config.get("kill_grace", 10))

        def stop() -> None:
            try:
                container.stop(timeout=grace)  # SIGTERM, then SIGKILL after the grace period
            except Exception:  # already gone: nothing to stop
                pass

        threading.Thread(target=stop, daemon=True).start()
