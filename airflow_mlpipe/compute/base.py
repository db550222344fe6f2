"""Compute targets: how the worker starts a step process and watches it.

One class per target type (``local``, ``docker``, ``kubernetes``), registered by name; optional
clients (docker, kubernetes) are imported inside the target's methods, never at import time.

A target's ``run(request, on_log)`` blocks until the step process ends, calls ``on_log`` with each
log line as it is produced (stdout and stderr, in order of arrival, without the trailing newline)
and returns the exit code (0 success; 128+N when a signal N ended it). ``kill()`` may be called
from another thread at any time, any number of times; the ``run`` in progress then returns soon.
A ``timeout`` in the request makes ``run`` kill the step and raise ``StepTimedOut``.

``identity(request)`` describes, as plain JSON, what the step cache key must hold about where and with
what the step runs: ``{"environment": {...}, "compute": {...}}`` (docs/reuse.md "Key components"). It
is cheap (it runs on every cache hit: no subprocess, at most one Engine API call), and the same
instance then runs the step with exactly what it described.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import importlib
import re
import threading
from collections.abc import Callable
from typing import Any

from airflow_mlpipe.errors import ComputeError

LogCallback = Callable[[str], None]

_RESOURCE_KEYS = frozenset({"cpu", "memory", "gpu"})


class StepTimedOut(ComputeError):
    """The step ran longer than its ``timeout`` and was stopped."""

    def __init__(self, message: str, timeout: float | None = None):
        super().__init__(message)
        self.timeout = timeout


@dataclasses.dataclass
class StepRequest:
    """Everything a compute target needs to start one step attempt.

    :param context: the launch context (docs/internals.md), passed as ``MLPIPE_CONTEXT``.
    :param env: extra environment variables (``MLPIPE_S3_ENDPOINT_URL``, the environment's ``env``...); never
        logged.
    :param credentials: the workspace's secrets as environment variables (``AWS_ACCESS_KEY_ID``,
        ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``): the local and docker targets hand them to the step
        process; the kubernetes target never writes them into a pod (a pod reads them from a Secret).
    :param python: interpreter for the step (local: base of the venv; containers: the command name).
    :param requirements: pip requirement strings installed into the step's environment (local).
    :param requirements_file: path (on the worker) of a requirements file, installed too (local).
    :param image: container image (docker, kubernetes).
    :param resources: ``{"cpu": 2 | "500m", "memory": "4Gi" | bytes, "gpu": 1}`` (all optional).
    :param timeout: seconds; the step is killed after it (``StepTimedOut``).
    :param workdir: local only: an existing directory to use as the cwd (the caller owns it, e.g.
        with the snapshot pre-unpacked); default: a fresh scratch directory, removed afterwards.
    :param pipeline, run_id, step, attempt: names for labels and scratch dirs (default: from context).
    """

    context: dict[str, Any]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    credentials: dict[str, str] = dataclasses.field(default_factory=dict)
    python: str = "python3"
    requirements: list[str] = dataclasses.field(default_factory=list)
    requirements_file: str | None = None
    image: str | None = None
    resources: dict[str, Any] = dataclasses.field(default_factory=dict)
    timeout: float | None = None
    workdir: str | None = None
    pipeline: str = ""
    run_id: str = ""
    step: str = ""
    attempt: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.context, dict):
            raise TypeError(f"StepRequest.context must be a dict, got {type(self.context).__name__}")
        unknown = set(self.resources or {}) - _RESOURCE_KEYS
        if unknown:
            raise ValueError(f"unknown resource(s) {sorted(unknown)}; expected cpu, memory, gpu")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be positive, got {self.timeout}")
        self.env = {str(k): str(v) for k, v in (self.env or {}).items()}
        self.credentials = {str(k): str(v) for k, v in (self.credentials or {}).items()}
        self.pipeline = self.pipeline or str(self.context.get("pipeline") or "pipeline")
        self.run_id = self.run_id or str(self.context.get("run_id") or "run")
        self.step = self.step or str(self.context.get("step") or "step")
        self.attempt = self.attempt or int(self.context.get("attempt") or 1)

    def __repr__(self) -> str:  # env and credentials: never print their values
        return (
            f"StepRequest(pipeline={self.pipeline!r}, run_id={self.run_id!r}, step={self.step!r}, "
            f"attempt={self.attempt}, image={self.image!r}, python={self.python!r}, "
            f"requirements={self.requirements!r}, resources={self.resources!r}, timeout={self.timeout!r}, "
            f"env_keys={sorted(self.env)!r}, credential_keys={sorted(self.credentials)!r})"
        )


class ComputeTarget(abc.ABC):
    """A place where steps run. Instances are built per step attempt by ``get_target``."""

    type_name: str = ""

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = dict(config or {})
        self._kill_requested = threading.Event()

    @abc.abstractmethod
    def run(self, request: StepRequest, on_log: LogCallback) -> int:
        """Start the step, stream its log lines to ``on_log``, block until it ends; its exit code."""

    @abc.abstractmethod
    def kill(self) -> None:
        """Stop the running step (idempotent; safe from another thread, before or after ``run``)."""

    @property
    def killed(self) -> bool:
        return self._kill_requested.is_set()

    def identity(self, request: StepRequest, on_log: LogCallback | None = None) -> dict[str, Any]:
        """What the cache key holds about this target and the step's environment (plain JSON).

        Targets describe themselves precisely (what reaches the step process in, resources and placement
        out); this default, for a target that does not, keeps its whole config and the request's
        environment fields: it may miss more often than needed, never reuse what it should not."""
        from airflow_mlpipe.compute.venvs import normalise_requirements, requirements_digest

        config = {k: v for k, v in sorted(self.config.items()) if k != "name"}
        return {
            "environment": {
                "python": request.python,
                "image": request.image,
                "requirements": normalise_requirements(request.requirements),
                "requirements_file": requirements_digest(request.requirements_file),
                "env": env_identity(request.env),
            },
            "compute": {"type": self.type_name, "config": config},
        }


# -- registry ----------------------------------------------------------------------------------
_REGISTRY: dict[str, type[ComputeTarget] | str] = {
    "local": "airflow_mlpipe.compute.local:LocalTarget",
    "docker": "airflow_mlpipe.compute.docker:DockerTarget",
    "kubernetes": "airflow_mlpipe.compute.kubernetes:KubernetesTarget",
}


def register_target(name: str, target: type[ComputeTarget] | str) -> None:
    """Register a target class (or ``"module:Class"`` imported on first use) under ``name``."""
    if not isinstance(target, str) and not (isinstance(target, type) and issubclass(target, ComputeTarget)):
        raise TypeError(f"compute target {name!r} must be a ComputeTarget subclass or 'module:Class'")
    _REGISTRY[name] = target


def target_types() -> list[str]:
    return sorted(_REGISTRY)


def get_target(type_name: str, config: dict[str, Any] | None = None) -> ComputeTarget:
    """A new target of type ``type_name`` configured with ``config`` (the pipeline's compute entry)."""
    entry = _REGISTRY.get(type_name)
    if entry is None:
        raise ValueError(f"unknown compute type {type_name!r}; known types: {', '.join(target_types())}")
    if isinstance(entry, str):
        module_name, _, class_name = entry.partition(":")
        try:
            entry = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ComputeError(f"compute type {type_name!r}: cannot import {module_name}:{class_name}: {exc}") from exc
        _REGISTRY[type_name] = entry
    return entry(config)  # type: ignore[operator]


# -- helpers shared by the targets ----------------------------------------------------------------
def env_identity(env: dict[str, str]) -> dict[str, str]:
    """Environment variables as the cache key holds them: each value as a short digest of name and
    value (values may be secrets: they never land in cache entries or run records in clear)."""
    return {
        str(name): hashlib.sha256(f"{name}\0{value}".encode()).hexdigest()[:16]
        for name, value in sorted(env.items())
    }


class LineSplitter:
    """Turns byte chunks into complete text lines (``\\n``; ``\\r\\n`` trimmed); ``close`` flushes."""

    def __init__(self, on_line: LogCallback, max_line: int = 64 * 1024):
        self._on_line = on_line
        self._buf = b""
        self._max = max_line

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._buf += chunk
        while True:
            index = self._buf.find(b"\n")
            if index < 0:
                if len(self._buf) > self._max:  # a huge line without newline: emit it in pieces
                    self._emit(self._buf)
                    self._buf = b""
                return
            line, self._buf = self._buf[:index], self._buf[index + 1 :]
            self._emit(line)

    def close(self) -> None:
        if self._buf:
            self._emit(self._buf)
            self._buf = b""

    def _emit(self, raw: bytes) -> None:
        self._on_line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))


_MEMORY_UNITS = {
    "": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
    "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "b": 1,
}


def parse_memory(value: Any) -> int:
    """Bytes from an int or a quantity like ``"512Mi"``, ``"2G"``, ``"1.5Gi"``, ``"800m"`` (docker's MB)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid memory quantity {value!r}")
    if isinstance(value, (int, float)):
        return int(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _MEMORY_UNITS:
        raise ValueError(f"invalid memory quantity {value!r}; use bytes or e.g. '512Mi', '4Gi', '2G'")
    return int(float(match.group(1)) * _MEMORY_UNITS[unit])


def parse_cpu(value: Any) -> float:
    """CPUs from a number or a quantity like ``"500m"``."""
    if isinstance(value, bool):
        raise ValueError(f"invalid cpu quantity {value!r}")
    if isinstance(value, (int, float)):
        cpus = float(value)
    else:
        text = str(value).strip()
        try:
            cpus = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError as exc:
            raise ValueError(f"invalid cpu quantity {value!r}; use e.g. 2, 0.5 or '500m'") from exc
    if cpus <= 0:
        raise ValueError(f"cpu must be positive, got {value!r}")
    return cpus


def exit_code_from_returncode(returncode: int) -> int:
    """Popen's -N (killed by signal N) -> 128+N, as shells and container engines report it."""
    return 128 - returncode if returncode < 0 else returncode


def start_timeout(seconds: float | None, timed_out: threading.Event, kill: Callable[[], None]) -> threading.Timer | None:
    """After ``seconds``, set ``timed_out`` and call ``kill`` (from a daemon timer thread); None if no limit.
    The caller cancels the timer when the step ends first."""
    if not seconds:
        return None

    def on_timeout() -> None:
        timed_out.set()
        kill()

    timer = threading.Timer(seconds, on_timeout)
    timer.daemon = True
    timer.start()
    return timer
