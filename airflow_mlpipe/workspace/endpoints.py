"""Endpoint records: the default version an endpoint runs when a trigger names none (``mlpipe endpoints
set-default``), with the history of changes, at ``endpoints/<name>.json`` in the workspace."""

from __future__ import annotations

from typing import Any

from airflow_mlpipe.errors import ConfError


def endpoint_key(endpoint: str) -> str:
    """Where the record of ``endpoint`` lives in the workspace."""
    return f"endpoints/{endpoint}.json"


def default_override(ws: Any, endpoint: str) -> int | None:
    """The version set with ``set-default``, or None when the definitions' default applies."""
    doc = ws.datastore.get_json_or_none(endpoint_key(endpoint))
    return int(doc["default"]) if isinstance(doc, dict) and doc.get("default") is not None else None


def set_default(ws: Any, endpoint: str, version: int, published: list[int] | None = None) -> dict[str, Any]:
    """Record ``version`` as the endpoint's default (keeps the history of changes). With ``published``,
    a version that is not among them is refused."""
    from airflow_mlpipe.workspace.manifest import now_iso

    if published is not None and version not in published:
        raise ConfError(f"endpoint {endpoint!r} has no published version {version}; published: {sorted(published)}")
    doc = ws.datastore.get_json_or_none(endpoint_key(endpoint)) or {"endpoint": endpoint, "history": []}
    doc["default"] = int(version)
    doc["history"] = [*doc.get("history", []), {"default": int(version), "set_at": now_iso()}]
    ws.datastore.put_json(endpoint_key(endpoint), doc)
    return doc
