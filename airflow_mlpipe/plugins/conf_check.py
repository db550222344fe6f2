"""Refuse a bad conf when the run is triggered, not when its first step starts.

``ConfCheckMiddleware`` is a root ASGI middleware of the Airflow API server. It looks at

- ``POST /api/v2/dags/{dag_id}/dagRuns`` (scripts, ``mlpipe trigger``, the official client, and the UI's
  trigger form, which posts there too), and
- ``POST /api/v2/backfills`` and ``/api/v2/backfills/dry_run`` (the form's backfill tab; ``dag_run_conf``),

and when the DAG is an mlpipe pipeline (it has a task of ``airflow_mlpipe.operators``), answers HTTP 400
``{"detail": "..."}``, as Airflow's own errors, if the conf has a key that is not a declared param (naming it,
with "did you mean" and the declared params), a value the shared rules refuse (``spec/values.py``), or a
``dataset`` param naming no registered dataset or version. Nothing is created then. Anything else goes on to
Airflow unchanged: the body bytes read here are handed on as they came.

Cost: other requests pay a method and path comparison. A trigger pays one small query (the DAG's latest
serialized version and its hash); the DAG's params are read from the serialized DAG once per version and
kept (no DAG file is parsed). The workspace (connection ``mlpipe_default``) is read only when a dataset param
names a registered dataset; if it cannot be reached within ``MLPIPE_TRIGGER_CHECK_TIMEOUT`` seconds (default
10) the run is let through, with the reason in the log and in the response header ``X-Mlpipe-Conf-Check``.
The check is made only for a caller Airflow would let trigger the DAG: others get Airflow's own 401 or 403,
never the list of params. Should the check itself fail, the request goes on unchecked (logged): the tasks
check the same rules before any step runs.

Imports nothing heavy at import time (Airflow imports the plugin in every process).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_mlpipe.errors import WorkspaceError

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TRIGGER_PATH = re.compile(r"(?:^|/)api/v2/dags/(?P<dag_id>[^/]+)/dagRuns/?$")
BACKFILL_PATH = re.compile(r"(?:^|/)api/v2/backfills(?:/dry_run)?/?$")
#: a conf bigger than this is Airflow's to judge (the body is handed on unread past this size)
MAX_BODY_BYTES = 4 * 1024 * 1024
CHECK_HEADER = b"x-mlpipe-conf-check"
CONN_ID = "mlpipe_default"
OPERATORS_PACKAGE = "airflow_mlpipe.operators"
DEFAULT_TIMEOUT = 10.0


def workspace_timeout() -> float:
    try:
        return max(0.1, float(os.environ.get("MLPIPE_TRIGGER_CHECK_TIMEOUT") or DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Pipeline:
    """What the check needs of an mlpipe DAG: its params as ``{"value", "schema"}`` and whether unknown keys
    are refused (a step with ``strict_conf=False`` takes any key; the other operators never do)."""

    declared: dict[str, dict[str, Any]]
    strict: bool


def describe_dag(dag: Any) -> Pipeline | None:
    """A deserialized DAG -> ``Pipeline``, or None when no task of it is an airflow-mlpipe operator."""
    mlpipe_tasks = [task for task in getattr(dag, "tasks", ())
                    if str(getattr(task, "_task_module", None) or "").startswith(OPERATORS_PACKAGE + ".")]
    if not mlpipe_tasks:
        return None
    # mapped tasks keep their arguments in partial_kwargs; operators without strict_conf always refuse
    strict = any(getattr(task, "strict_conf", (getattr(task, "partial_kwargs", None) or {}).get("strict_conf", True))
                 is not False for task in mlpipe_tasks)
    declared: dict[str, dict[str, Any]] = {}
    params = getattr(dag, "params", None) or {}
    for name in params:
        param = params.get_param(name) if hasattr(params, "get_param") else params[name]
        schema = getattr(param, "schema", None)
        value = getattr(param, "value", None)
        declared[name] = {"value": value if isinstance(value, (str, int, float, bool)) else None,
                          "schema": dict(schema) if isinstance(schema, Mapping) else {}}
    return Pipeline(declared, strict)


class PipelineCache:
    """dag_id -> (serialized DAG hash, Pipeline or None): the latest version's params, read once per version."""

    def __init__(self, size: int = 512):
        self.size = size
        self._entries: OrderedDict[str, tuple[str, Pipeline | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, dag_id: str) -> Pipeline | None:
        """Blocking (the metadata DB): call it from a worker thread."""
        from airflow.models.dag_version import DagVersion
        from airflow.models.serialized_dag import SerializedDagModel as Serialized
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.execute(
                select(Serialized.id, Serialized.dag_hash)
                .join(DagVersion, Serialized.dag_version_id == DagVersion.id)
                .where(Serialized.dag_id == dag_id)
                .order_by(DagVersion.version_number.desc())
                .limit(1)
            ).first()
            if row is None:
                return None  # an unknown DAG: Airflow answers 404
            with self._lock:
                cached = self._entries.get(dag_id)
            if cached is not None and cached[0] == row.dag_hash:
                return cached[1]
            pipeline = describe_dag(session.get(Serialized, row.id).dag)
        with self._lock:
            self._entries[dag_id] = (row.dag_hash, pipeline)
            self._entries.move_to_end(dag_id)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return pipeline


class WorkspaceUnreachable(WorkspaceError):
    """The workspace of the connection cannot be read from the API server: datasets are not checked."""


class RegistryCheck:
    """Whether the datasets a conf names are registered, in the workspace of connection ``CONN_ID``."""

    def __init__(self) -> None:
        self._workspaces: dict[str, Any] = {}
        self._lock = threading.Lock()

    def workspace(self) -> Any:
        from airflow.models.connection import Connection

        from airflow_mlpipe.hooks.workspace import MlpipeHook

        try:
            conn = Connection.get_connection_from_secrets(CONN_ID)
            settings = MlpipeHook.settings_from_connection(conn, CONN_ID)
        except Exception as exc:
            raise WorkspaceUnreachable(f"connection {CONN_ID!r}: {exc}") from exc
        key = json.dumps(settings, sort_keys=True, default=str)
        with self._lock:
            ws = self._workspaces.get(key)
        if ws is None:
            from airflow_mlpipe.workspace.core import Workspace

            try:
                ws = Workspace.from_uri(settings["uri"], **settings["options"])
            except Exception as exc:
                raise WorkspaceUnreachable(f"workspace {settings['uri']}: {exc}") from exc
            with self._lock:
                self._workspaces = {key: ws}  # one connection: keep only its current settings
        return ws

    def problems(self, refs: list[tuple[str, str]]) -> list[str]:
        """Blocking (the workspace): call it from a worker thread. Raises WorkspaceUnreachable."""
        from airflow_mlpipe.errors import NotFoundError
        from airflow_mlpipe.spec.values import did_you_mean

        ws = self.workspace()
        root = getattr(ws.datastore, "root", None)
        if root is not None and not root.is_dir():
            raise WorkspaceUnreachable(f"workspace {ws.uri} is not a folder on the API server")
        try:
            names = ws.datasets.list_names()
        except Exception as exc:
            raise WorkspaceUnreachable(f"workspace {ws.uri}: {exc}") from exc
        out = []
        for param, ref in refs:
            try:
                ws.datasets.resolve(ref)
            except NotFoundError as exc:
                name = ref.partition(":")[0]
                hint = "" if name in names else did_you_mean(name, names)
                out.append(f"param {param!r}: {exc}{hint}")
            except Exception as exc:
                raise WorkspaceUnreachable(f"workspace {ws.uri}: {exc}") from exc
        return out


@dataclass
class Verdict:
    refusal: str | None = None
    note: str | None = None  # why the check could not be complete (a response header)


class ConfCheckMiddleware:
    """``app.add_middleware(ConfCheckMiddleware)``: see the module docstring."""

    def __init__(self, app: Callable[..., Awaitable[None]]):
        self.app = app
        self.pipelines = PipelineCache()
        self.registry = RegistryCheck()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        path = scope.get("path") or ""
        trigger = TRIGGER_PATH.search(path)
        if trigger is None and BACKFILL_PATH.search(path) is None:
            await self.app(scope, receive, send)
            return
        body, replay = await read_body(receive)
        verdict = Verdict()
        if body is not None:
            try:
                verdict = await self.check(scope, trigger.group("dag_id") if trigger else None, body)
            except Exception:
                log.exception("mlpipe: the trigger-time conf check failed; the request goes on unchecked "
                              "(the tasks check the conf before any step runs)")
        if verdict.refusal is not None:
            await respond(send, 400, verdict.refusal)
            return
        if verdict.note is not None:
            send = with_header(send, CHECK_HEADER, verdict.note)
        await self.app(scope, replay, send)

    async def check(self, scope: Scope, dag_id: str | None, body: bytes) -> Verdict:
        import anyio.to_thread

        from airflow_mlpipe.spec.values import NOT_TRIGGERED, conf_problems, registered_refs

        try:
            doc = json.loads(body)
        except ValueError:
            return Verdict()  # Airflow answers 422
        if not isinstance(doc, dict):
            return Verdict()
        if dag_id is None:  # a backfill
            dag_id, conf = doc.get("dag_id"), doc.get("dag_run_conf")
        else:
            conf = doc.get("conf")
        if not isinstance(dag_id, str) or not (conf is None or isinstance(conf, dict)):
            return Verdict()
        pipeline = await anyio.to_thread.run_sync(self.pipelines.get, dag_id)
        if pipeline is None or not await authorized(scope, dag_id):
            return Verdict()
        conf = conf or {}
        problems = conf_problems(dag_id, pipeline.declared, conf, unknown_keys=pipeline.strict)
        if not problems:
            refs = registered_refs(pipeline.declared, conf)
            if refs:
                try:
                    problems = await self.registry_problems(refs)
                except WorkspaceUnreachable as exc:
                    note = f"datasets not checked: {exc}"
                    log.warning("mlpipe: trigger of %s let through, %s", dag_id, note)
                    return Verdict(note=note)
        if not problems:
            return Verdict()
        refusal = f"{'; '.join(problems)}. {NOT_TRIGGERED}"
        log.info("mlpipe: refused a run of %s: %s", dag_id, refusal)
        return Verdict(refusal=refusal)

    async def registry_problems(self, refs: list[tuple[str, str]]) -> list[str]:
        import anyio
        import anyio.to_thread

        timeout = workspace_timeout()
        with anyio.move_on_after(timeout):
            return await anyio.to_thread.run_sync(self.registry.problems, refs, abandon_on_cancel=True)
        raise WorkspaceUnreachable(f"the workspace did not answer within {timeout:g}s")


async def authorized(scope: Scope, dag_id: str) -> bool:
    """True if the request's user (bearer token, else the UI's cookie) may trigger ``dag_id``."""
    import anyio.to_thread
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import HTTPException
    from fastapi.security import HTTPAuthorizationCredentials
    from starlette.requests import Request

    request = Request(scope)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer = None
    if scheme.lower() == "bearer" and token.strip():
        bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=token.strip())
    try:
        user = await get_user(request, None, bearer)
    except HTTPException:
        return False

    def allowed() -> bool:
        from airflow.models.dag import DagModel

        details = DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id))
        return bool(get_auth_manager().is_authorized_dag(
            method="POST", access_entity=DagAccessEntity.RUN, details=details, user=user))

    return await anyio.to_thread.run_sync(allowed)


# ------------------------------------------------------------------------------------------- ASGI plumbing


async def read_body(receive: Receive) -> tuple[bytes | None, Receive]:
    """Read the request body (up to MAX_BODY_BYTES) -> (body or None if not read whole, a ``receive`` that
    hands the same messages to the app, then goes on with the original)."""
    messages: list[Message] = []
    size = 0
    complete = False
    while True:
        message = await receive()
        messages.append(message)
        if message.get("type") != "http.request":
            break  # http.disconnect
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            complete = True
            break
        if size > MAX_BODY_BYTES:
            break
    body = b"".join(m.get("body", b"") for m in messages if m.get("type") == "http.request") if complete else None
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return body, replay


async def respond(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def with_header(send: Send, name: bytes, value: str) -> Send:
    text = re.sub(r"[^\x20-\x7e]", "?", value)[:500].encode("latin-1")

    async def wrapped(message: Message) -> None:
        if message.get("type") == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (name, text)]}
        await send(message)

    return wrapped
