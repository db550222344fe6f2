"""The step context seen by a user script: ``from airflow_mlpipe.runtime import context``.

Standard library only (this module runs inside step images that have nothing but python3).

Inside a step the launcher (``airflow_mlpipe.runtime.launch``) configures the process-wide
context with the resolved local paths before it runs the script, and exports them in
``MLPIPE_STEP_PATHS`` so the script's child processes see the same ``inputs``/``outputs``
(their metrics reach the task log as ``::mlpipe-metric::`` lines, not result.json). A script run by hand (no
``MLPIPE_CONTEXT`` in the environment) gets an *offline* context: ``log_metric`` and friends
print and keep values in memory, ``params``/``inputs``/``outputs`` are empty, so the script can
still be debugged with ``python prep.py --out /tmp/x``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import threading
import time
from typing import Any

CONTEXT_ENV = "MLPIPE_CONTEXT"
# Set by the launcher for the script's own child processes: {"inputs": {name: path}, "outputs": {...}}.
PATHS_ENV = "MLPIPE_STEP_PATHS"
PARENT_PID_ENV = "MLPIPE_PARENT_PID"  # set by local compute: the step process dies with this process
METRIC_PREFIX = "::mlpipe-metric::"


def _json_number(value: Any) -> Any:
    """Metric values are numbers; NaN/inf are kept as strings so the result stays valid JSON."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric value must be a number, got {type(value).__name__}: {value!r}") from exc
    if math.isnan(number) or math.isinf(number):
        return str(number)
    return number


class StepContext:
    """What a step script can see and record. Values are loaded lazily from ``MLPIPE_CONTEXT``."""

    def __init__(self, doc: dict[str, Any] | None = None, *, offline: bool | None = None):
        self._lock = threading.Lock()
        self._doc = doc
        self._offline = offline
        self._inputs: dict[str, pathlib.Path] = {}
        self._outputs: dict[str, pathlib.Path] = {}
        self._metrics: dict[str, list[dict[str, Any]]] = {}
        self._params_logged: dict[str, Any] = {}
        self._tags: dict[str, Any] = {}
        self._emit_lines = True

    # -- set-up (used by the launcher) ---------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        if self._doc is None:
            raw = os.environ.get(CONTEXT_ENV)
            if raw:
                try:
                    self._doc = json.loads(raw)
                except ValueError as exc:
                    raise RuntimeError(f"{CONTEXT_ENV} is not valid JSON: {exc}") from exc
                if self._offline is None:
                    self._offline = False
                self._load_paths()
            else:
                self._doc = {}
                if self._offline is None:
                    self._offline = True
        if self._offline is None:
            self._offline = False
        return self._doc

    def _load_paths(self) -> None:
        raw = os.environ.get(PATHS_ENV)
        if not raw:
            return
        try:
            paths = json.loads(raw)
        except ValueError:
            return
        self._inputs = {k: pathlib.Path(v) for k, v in (paths.get("inputs") or {}).items()}
        self._outputs = {k: pathlib.Path(v) for k, v in (paths.get("outputs") or {}).items()}

    def configure(
        self,
        doc: dict[str, Any],
        inputs: dict[str, pathlib.Path],
        outputs: dict[str, pathlib.Path],
        *,
        emit_lines: bool = True,
    ) -> None:
        """Bind the context to a launch document and the local paths the launcher materialised."""
        with self._lock:
            self._doc = doc
            self._offline = False
            self._inputs = dict(inputs)
            self._outputs = dict(outputs)
            self._emit_lines = emit_lines
            self._tags.update(doc.get("tags") or {})

    # -- what the script reads ------------------------------------------------------------------
    @property
    def offline(self) -> bool:
        """True when the script runs outside a step (no ``MLPIPE_CONTEXT``)."""
        self._load()
        return bool(self._offline)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._load().get("params") or {})

    @property
    def inputs(self) -> dict[str, pathlib.Path]:
        self._load()
        return dict(self._inputs)

    @property
    def outputs(self) -> dict[str, pathlib.Path]:
        self._load()
        return dict(self._outputs)

    @property
    def run_id(self) -> str:
        return str(self._load().get("run_id") or "offline")

    @property
    def pipeline(self) -> str:
        return str(self._load().get("pipeline") or "offline")

    @property
    def step(self) -> str:
        return str(self._load().get("step") or "offline")

    @property
    def attempt(self) -> int:
        return int(self._load().get("attempt") or 1)

    @property
    def workspace(self) -> str | None:
        return self._load().get("workspace")

    # -- what the script records ----------------------------------------------------------------
    def log_metric(self, name: str, value: Any, step: int | None = None) -> None:
        """Record one value of metric ``name`` (a series is kept; the summary is the last value)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric name must be a non-empty string, got {name!r}")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
            raise TypeError(f"metric step must be an int or None, got {step!r}")
        self._load()
        point = {"value": _json_number(value), "step": step, "time": round(time.time(), 3)}
        with self._lock:
            self._metrics.setdefault(name, []).append(point)
        self._emit("metric", {"name": name, **point})

    def log_params(self, params: dict[str, Any]) -> None:
        """Record hyper-parameters or settings the script chose (JSON-able values)."""
        if not isinstance(params, dict):
            raise TypeError(f"log_params expects a dict, got {type(params).__name__}")
        self._load()
        clean = {str(k): _jsonable(v) for k, v in params.items()}
        with self._lock:
            self._params_logged.update(clean)
        self._emit("params", clean)

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Attach free-form tags to the step run record."""
        if not isinstance(tags, dict):
            raise TypeError(f"set_tags expects a dict, got {type(tags).__name__}")
        self._load()
        clean = {str(k): _jsonable(v) for k, v in tags.items()}
        with self._lock:
            self._tags.update(clean)
        self._emit("tags", clean)

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self._offline:
            print(f"[mlpipe offline] {kind}: {json.dumps(payload, sort_keys=True)}", file=sys.stderr, flush=True)
        elif self._emit_lines:
            line = json.dumps({"kind": kind, **payload}, sort_keys=True, separators=(",", ":"))
            print(f"{METRIC_PREFIX}{line}", flush=True)

    # -- what the launcher collects -------------------------------------------------------------
    @property
    def metrics(self) -> dict[str, Any]:
        """Summary: the last value of each metric."""
        with self._lock:
            return {name: series[-1]["value"] for name, series in self._metrics.items() if series}

    @property
    def metric_series(self) -> dict[str, list[dict[str, Any]]]:
        with self._lock:
            return {name: [dict(p) for p in series] for name, series in self._metrics.items()}

    @property
    def params_logged(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._params_logged)

    @property
    def tags(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._tags)

    def __repr__(self) -> str:
        mode = "offline" if self._offline else f"{self.pipeline}/{self.run_id}/{self.step}"
        return f"<StepContext {mode}>"


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value
