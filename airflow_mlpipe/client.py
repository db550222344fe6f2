"""A small client of the Airflow 3 REST API (``/api/v2``), for the CLI and the demo.

Authentication is the Airflow 3 way: a JWT from ``POST /auth/token`` with a username and password, or a
token given directly. Imports no Airflow: the CLI talks to a remote Airflow over HTTP.

A busy Airflow answers slowly, drops connections or answers 5xx (SQLite's "database is locked" comes back
as a 500). Calls that can safely be sent twice are retried on timeouts, transport errors, 5xx and 429,
with exponential backoff (plus jitter) until an overall deadline (``retry_deadline``, default
``MLPIPE_AIRFLOW_RETRY_DEADLINE`` or 120 s): every GET, ``POST /auth/token``, the ``is_paused`` PATCH, and a
trigger, which always carries a ``dag_run_id`` (generated when not given) so that a 409 for that id on a
retry means the first POST landed. Other POSTs (Asset events) are sent once. A refused connection (nothing
listens) is retried for a few seconds only, so "Airflow is down" is reported quickly.
"""

from __future__ import annotations

import datetime
import os
import random
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from airflow_mlpipe.errors import MlpipeError

TERMINAL_RUN_STATES = {"success", "failed"}
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_RETRY_DEADLINE = 120.0
#: a refused connection (nothing listens: Airflow is down or restarting) is retried this long at most
REFUSED_DEADLINE = 5.0


class AirflowApiError(MlpipeError):
    """The Airflow REST API refused a request; ``status`` is the HTTP status and ``detail`` its reason.
    A client error (4xx but a timeout or throttling) is permanent; no answer or a 5xx is transient."""

    def __init__(self, message: str, status: int | None = None, detail: Any = None, attempts: int = 1):
        permanent = status is not None and 400 <= status < 500 and status not in (408, 425, 429)
        super().__init__(message, permanent=permanent)
        self.status = status
        self.detail = detail
        self.attempts = attempts


def new_run_id() -> str:
    """A run id in Airflow's own format for manual runs."""
    return f"manual__{datetime.datetime.now(datetime.timezone.utc).isoformat()}"


def url_segment(value: Any) -> str:
    """``value`` as one path segment of a URL: a run id like ``manual__2026-01-01T00:00:00+00:00`` or any
    id holding '/', '?', '#', '%' or spaces reaches Airflow as itself."""
    return urllib.parse.quote(str(value), safe="")


def api_path(*segments: Any) -> str:
    """``api_path("dags", dag_id, "dagRuns", run_id)`` -> ``/dags/<dag_id>/dagRuns/<run_id>``, each segment
    escaped (``url_segment``)."""
    return "".join("/" + url_segment(segment) for segment in segments)


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json().get("detail", response.text)
    except ValueError:
        return response.text


class AirflowClient:
    """``AirflowClient(url, token=...)`` or ``AirflowClient(url, username=..., password=...)``.

    Defaults come from the environment: ``MLPIPE_AIRFLOW_URL`` (else http://localhost:8080),
    ``MLPIPE_AIRFLOW_TOKEN``, ``MLPIPE_AIRFLOW_USERNAME`` / ``MLPIPE_AIRFLOW_PASSWORD``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        retry_deadline: float | None = None,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ) -> None:
        self.url = (url or os.environ.get("MLPIPE_AIRFLOW_URL") or "http://localhost:8080").rstrip("/")
        self._token = token or os.environ.get("MLPIPE_AIRFLOW_TOKEN")
        self._given_token = bool(self._token)
        self._username = username or os.environ.get("MLPIPE_AIRFLOW_USERNAME")
        self._password = password or os.environ.get("MLPIPE_AIRFLOW_PASSWORD")
        if retry_deadline is None:
            retry_deadline = float(os.environ.get("MLPIPE_AIRFLOW_RETRY_DEADLINE") or DEFAULT_RETRY_DEADLINE)
        self.retry_deadline = retry_deadline
        self.backoff = backoff
        self.max_backoff = max_backoff
        # the transport retries failed connection attempts itself; _send retries the rest
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=httpx.HTTPTransport(retries=2),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _send(self, method: str, path: str, retry: bool, **kwargs: Any) -> tuple[httpx.Response, int]:
        """One call, retried (if ``retry``) on timeouts, transport errors and RETRY_STATUSES with exponential
        backoff until ``retry_deadline``; (the last response, attempts made). Raises AirflowApiError when no
        answer came at all."""
        started = time.monotonic()
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:  # timeouts, refused or dropped connections, protocol errors
                failure: httpx.Response | httpx.TransportError = exc
            else:
                if not (retry and response.status_code in RETRY_STATUSES):
                    return response, attempt
                failure = response
            wait = delay * (0.5 + random.random() / 2)
            if isinstance(failure, httpx.Response) and failure.headers.get("Retry-After", "").isdigit():
                wait = max(wait, float(failure.headers["Retry-After"]))
            elapsed = time.monotonic() - started
            deadline = self.retry_deadline
            if isinstance(failure, httpx.ConnectError):
                deadline = min(deadline, REFUSED_DEADLINE)
            if not retry or elapsed + wait > deadline:
                if isinstance(failure, httpx.Response):
                    return failure, attempt
                tried = f" ({attempt} attempts in {elapsed:.0f}s)" if attempt > 1 else ""
                raise AirflowApiError(
                    f"{method} {path}: cannot reach Airflow at {self.url}{tried}: "
                    f"{type(failure).__name__}: {failure}; is it running (and not overloaded)?"
                ) from failure
            time.sleep(wait)
            delay = min(delay * 2, self.max_backoff)

    def token(self) -> str:
        if self._token:
            return self._token
        if not (self._username and self._password):
            raise AirflowApiError(
                f"no credentials for {self.url}: set MLPIPE_AIRFLOW_TOKEN, or MLPIPE_AIRFLOW_USERNAME and "
                "MLPIPE_AIRFLOW_PASSWORD"
            )
        response, _ = self._send("POST", "/auth/token", retry=True,
                                 json={"username": self._username, "password": self._password})
        if response.status_code not in (200, 201):
            raise AirflowApiError(
                f"login to {self.url} as {self._username!r} failed (HTTP {response.status_code}): "
                f"{_detail(response)}",
                response.status_code,
            )
        self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, retry: bool | None = None, **kwargs: Any) -> Any:
        """``method /api/v2{path}``; the JSON answer. ``retry`` defaults to True for GET only."""
        retry = method == "GET" if retry is None else retry
        extra_headers = kwargs.pop("headers", {})
        for relogin in (True, False):
            headers = {"Authorization": f"Bearer {self.token()}", **extra_headers}
            response, attempts = self._send(method, f"/api/v2{path}", retry, headers=headers, **kwargs)
            if response.status_code == 401 and relogin and not self._given_token:
                self._token = None  # an expired JWT: log in again, once
                continue
            break
        if response.status_code >= 400:
            detail = _detail(response)
            tried = f" (after {attempts} attempts)" if attempts > 1 else ""
            raise AirflowApiError(
                f"{method} {path} answered HTTP {response.status_code}{tried}: {detail}", response.status_code, detail,
                attempts=attempts,
            )
        return response.json() if response.content else None

    # ------------------------------------------------------------------ API
    def health(self) -> dict[str, Any]:
        response, attempts = self._send("GET", "/api/v2/monitor/health", retry=True)
        if response.status_code != 200:
            raise AirflowApiError(f"GET /monitor/health answered HTTP {response.status_code}: {_detail(response)}",
                                  response.status_code, _detail(response), attempts=attempts)
        return response.json()

    def get_dag(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", api_path("dags", dag_id))

    def get_dag_details(self, dag_id: str) -> dict[str, Any]:
        return self.request("GET", api_path("dags", dag_id, "details"))

    def set_paused(self, dag_id: str, paused: bool) -> dict[str, Any]:
        # setting an absolute value: safe to send twice
        return self.request("PATCH", api_path("dags", dag_id), retry=True, json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        """Queue a run (``logical_date`` null). The run is named here (``manual__<UTC time>``, as Airflow
        names it) unless ``run_id`` is given, so the POST can be retried: a 409 for that id on a retry
        means an earlier attempt created it, and that run is returned."""
        run_id = run_id or new_run_id()
        body: dict[str, Any] = {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})}
        try:
            return self.request("POST", api_path("dags", dag_id, "dagRuns"), retry=True, json=body)
        except AirflowApiError as exc:
            if exc.status != 409 or exc.attempts < 2:
                raise
            run = self.get_run(dag_id, run_id)
            if run.get("conf") != body["conf"]:
                raise
            return run

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", api_path("dags", dag_id, "dagRuns", run_id))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = api_path("dags", dag_id, "dagRuns", run_id, "taskInstances")
        return self.request("GET", path, params={"limit": 1000})["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        try:
            entry = self.request(
                "GET",
                api_path("dags", dag_id, "dagRuns", run_id, "taskInstances", task_id, "xcomEntries", key),
                params={"map_index": map_index, "deserialize": True},
            )
        except AirflowApiError as exc:
            if exc.status == 404:
                return None
            raise
        return entry.get("value")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task log as text: one line per event."""
        events = self.task_log_events(dag_id, run_id, task_id, try_number, map_index)
        return "\n".join(str(e.get("event", "")) if isinstance(e, dict) else str(e) for e in events)

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout: float = 1800,
        interval: float = 1.0,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_run(dag_id, run_id)
            if on_poll is not None:
                on_poll(run)
            if run["state"] in TERMINAL_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowApiError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(interval)

    # ------------------------------------------------------------------ added for the CLI
    def dag_ids(self, limit: int = 1000) -> list[str]:
        """Ids of the DAGs Airflow knows (for "did you mean" hints)."""
        data = self.request("GET", "/dags", params={"limit": limit})
        return [dag["dag_id"] for dag in data.get("dags", [])]

    def find_asset(self, uri: str) -> dict[str, Any] | None:
        """The active Asset whose URI is exactly ``uri`` (``GET /assets?uri_pattern=``, a substring
        search, filtered here), or None if no DAG references it."""
        data = self.request("GET", "/assets", params={"uri_pattern": uri, "limit": 100})
        for asset in data.get("assets", []):
            if asset.get("uri") == uri:
                return asset
        return None

    def create_asset_event(self, asset_id: int, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``POST /assets/events``: record an event on the asset (DAGs scheduled on it get queued)."""
        return self.request("POST", "/assets/events", json={"asset_id": asset_id, "extra": dict(extra or {})})

    def dag_runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The DAG's runs, newest first."""
        data = self.request(
            "GET", api_path("dags", dag_id, "dagRuns"), params={"limit": limit, "order_by": "-run_after"}
        )
        return data.get("dag_runs", [])

    def has_credentials(self) -> bool:
        """True if a token, or a username and password, were given (or found in the environment)."""
        return bool(self._token or (self._username and self._password))

    def task_log_events(
        self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1
    ) -> list[Any]:
        """The task log as Airflow returns it: structured events (dicts with ``event``, ``level``,
        ``timestamp``, and ``error_detail`` for exceptions) or plain lines."""
        data = self.request(
            "GET",
            api_path("dags", dag_id, "dagRuns", run_id, "taskInstances", task_id, "logs", try_number),
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        content = data.get("content") if isinstance(data, dict) else data
        if isinstance(content, list):
            return content
        return str(content or "").splitlines()
