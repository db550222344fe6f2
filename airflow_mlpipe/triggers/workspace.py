"""WorkspaceChangeTrigger: waits (asynchronously, in the triggerer) for a change in the workspace: a
dataset or model version newer than a baseline, a model alias moving, or new objects under a prefix.

Serialisable (classpath + plain kwargs), safe to run twice (it only reads), and the blocking workspace
calls run in a thread so the triggerer's event loop never stalls.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow_mlpipe.compat import BaseTrigger, TriggerEvent


def check_change(ws: Any, kind: str, name: str | None, alias: str | None, prefix: str | None,
                 baseline: Any) -> dict[str, Any] | None:
    """None while nothing changed; else the event payload. Shared by the trigger and poke mode."""
    if prefix is not None:
        keys = sorted(obj.key for obj in ws.datastore.list(prefix))
        new = sorted(set(keys) - set(baseline or []))
        return {"kind": "prefix", "prefix": prefix, "new_keys": new[:1000], "count": len(new)} if new else None
    registry = ws.models if kind == "models" else ws.datasets
    if alias:
        current = registry.get_alias(name, alias)
        if current is not None and current != baseline:
            return {"kind": kind, "name": name, "alias": alias, "version": current, "previous": baseline}
        return None
    latest = registry.latest_number(name)
    if latest > int(baseline or 0):
        return {"kind": kind, "name": name, "version": latest, "previous": baseline}
    return None


def current_state(ws: Any, kind: str, name: str | None, alias: str | None, prefix: str | None) -> Any:
    """The baseline to compare against: object keys, alias holder, or the latest version number."""
    if prefix is not None:
        return sorted(obj.key for obj in ws.datastore.list(prefix))
    registry = ws.models if kind == "models" else ws.datasets
    if alias:
        return registry.get_alias(name, alias)
    return registry.latest_number(name)


class WorkspaceChangeTrigger(BaseTrigger):
    def __init__(
        self,
        *,
        mlpipe_conn_id: str,
        kind: str = "datasets",
        name: str | None = None,
        alias: str | None = None,
        prefix: str | None = None,
        baseline: Any = None,
        poll_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.mlpipe_conn_id = mlpipe_conn_id
        self.kind = kind
        self.name = name
        self.alias = alias
        self.prefix = prefix
        self.baseline = baseline
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "mlpipe_conn_id": self.mlpipe_conn_id,
                "kind": self.kind,
                "name": self.name,
                "alias": self.alias,
                "prefix": self.prefix,
                "baseline": self.baseline,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_mlpipe.hooks.workspace import MlpipeHook

        conn = await MlpipeHook.aget_connection(self.mlpipe_conn_id)
        ws = await asyncio.to_thread(MlpipeHook.workspace_from_connection, conn, self.mlpipe_conn_id)
        while True:
            try:
                event = await asyncio.to_thread(
                    check_change, ws, self.kind, self.name, self.alias, self.prefix, self.baseline
                )
            except Exception as exc:  # report instead of dying silently in the triggerer
                yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                return
            if event is not None:
                yield TriggerEvent({"status": "changed", **event})
                return
            await asyncio.sleep(self.poll_interval)
