"""Garbage collection of intermediate step outputs (``outputs/<pipeline>/<run_id>/<step>/<output>/``).

An output is collected when its newest object is older than ``older_than_days`` and nothing
references it:
- a *live* cache entry (the entry a ``cache/latest/<pipeline>/<step>.json`` pointer names: what the
  next run of that step would reuse);
- a registered dataset or model version whose ``producing_run`` names it: any string value in
  ``producing_run`` that starts with ``outputs/``, the ``pipeline``/``run_id``/``step``/``output``
  fields together, or a ``cache_key`` (the outputs of that entry).
``datasets/`` and ``models/`` are never touched (registered content lives there, copied in). Superseded
cache entries whose outputs are collected are deleted too (a real run only). Dry run by default.

On S3, multipart uploads left open for more than ``stale_upload_hours`` (default 24; a killed writer leaves
them: invisible, but billed) are aborted too; a step's own later attempt aborts those of its outputs at once.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from airflow_mlpipe.workspace.cache import StepCache
from airflow_mlpipe.workspace.datastore import Datastore
from airflow_mlpipe.workspace.registry import KINDS, VersionedRegistry
from airflow_mlpipe.workspace.runs import output_prefix

__all__ = ["GcReport", "collect_garbage"]

_DEPTH = 5  # outputs/<pipeline>/<run_id>/<step>/<output>


@dataclasses.dataclass
class GcReport:
    dry_run: bool
    older_than_days: float
    collected: list[dict] = dataclasses.field(default_factory=list)  # {prefix, bytes, files, age_days}
    kept: list[dict] = dataclasses.field(default_factory=list)  # {prefix, reason}
    entries_removed: list[str] = dataclasses.field(default_factory=list)
    stale_uploads: list[dict] = dataclasses.field(default_factory=list)  # {key, age_hours}: open multipart uploads

    @property
    def bytes(self) -> int:
        return sum(item["bytes"] for item in self.collected)

    @property
    def prefixes(self) -> list[str]:
        return [item["prefix"] for item in self.collected]

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {len(self.collected)} output(s), {self.bytes} bytes (older than {self.older_than_days} days)"]
        lines += [f"  {item['prefix']}  {item['bytes']} bytes  {item['age_days']:.1f} days" for item in self.collected]
        if self.stale_uploads:
            lines.append(f"{'would abort' if self.dry_run else 'aborted'} {len(self.stale_uploads)} stale multipart upload(s)")
        return "\n".join(lines)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _referenced(datastore: Datastore, cache: StepCache) -> tuple[dict[str, str], set[str]]:
    """-> ({output prefix: why it is kept}, live cache keys)."""
    keep: dict[str, str] = {}
    entry_refs: dict[str, str] = {}
    for kind in KINDS:
        registry = VersionedRegistry(datastore, kind)
        for name in registry.list_names():
            for version in registry.list_versions(name):
                run = version.producing_run
                if not isinstance(run, dict):
                    continue
                why = f"produced {kind[:-1]} {version.ref}"
                for text in _strings(run):
                    if text.startswith("outputs/"):
                        keep.setdefault(text.strip("/"), why)
                fields = [run.get(f) for f in ("pipeline", "run_id", "step", "output")]
                if all(isinstance(f, str) and f for f in fields):
                    try:
                        keep.setdefault(output_prefix(*fields), why)
                    except ValueError:
                        pass
                if isinstance(run.get("cache_key"), str):
                    entry_refs[run["cache_key"]] = why
    live = cache.live_keys()
    for key in sorted(live | set(entry_refs)):
        try:
            entry = cache.get(key, set_aside=False)
        except ValueError:
            continue
        if entry is None:
            continue
        why = entry_refs.get(key) or f"live cache entry of {entry.pipeline}/{entry.step}"
        for out in entry.outputs.values():
            if isinstance(out, dict) and isinstance(out.get("key"), str):
                keep.setdefault(out["key"].strip("/"), why)
    return keep, live


def _stale_uploads(datastore: Datastore, report: GcReport, stale_upload_hours: float, now: float) -> None:
    """Find (and unless dry run, abort) multipart uploads open for longer than ``stale_upload_hours``."""
    listing = getattr(datastore, "multipart_uploads", None)
    if listing is None:  # a local datastore has no multipart uploads
        return
    for key, upload_id, started in listing(""):
        age_hours = (now - started) / 3600.0 if started is not None else float("inf")
        if age_hours >= stale_upload_hours:
            report.stale_uploads.append({"key": key, "upload_id": upload_id, "age_hours": round(age_hours, 2)})
    if not report.dry_run:
        for item in report.stale_uploads:
            datastore.abort_upload(item["key"], item["upload_id"])


def collect_garbage(datastore: Datastore, older_than_days: float, dry_run: bool = True, now: float | None = None,
                    stale_upload_hours: float = 24.0) -> GcReport:
    """Delete (or, with ``dry_run``, only list) unreferenced outputs older than ``older_than_days``, and
    abort multipart uploads open for more than ``stale_upload_hours``."""
    if older_than_days < 0:
        raise ValueError("older_than_days must be >= 0")
    if stale_upload_hours < 0:
        raise ValueError("stale_upload_hours must be >= 0")
    now = time.time() if now is None else now
    cache = StepCache(datastore)
    keep, live = _referenced(datastore, cache)
    groups: dict[str, dict] = {}
    for info in datastore.list("outputs"):
        parts = info.key.split("/")
        prefix = "/".join(parts[: min(_DEPTH, len(parts) - 1)])
        group = groups.setdefault(prefix, {"prefix": prefix, "bytes": 0, "files": 0, "newest": 0.0})
        group["bytes"] += info.size
        group["files"] += 1
        group["newest"] = max(group["newest"], info.mtime if info.mtime is not None else now)
    report = GcReport(dry_run=dry_run, older_than_days=older_than_days)
    _stale_uploads(datastore, report, stale_upload_hours, now)
    for prefix, group in sorted(groups.items()):
        age_days = max(0.0, (now - group["newest"]) / 86400.0)
        reason = next(
            (why for ref, why in keep.items() if ref == prefix or ref.startswith(prefix + "/") or prefix.startswith(ref + "/")),
            None,
        )
        if reason is not None:
            report.kept.append({"prefix": prefix, "reason": reason})
        elif age_days < older_than_days:
            report.kept.append({"prefix": prefix, "reason": f"younger than {older_than_days} days"})
        else:
            report.collected.append({"prefix": prefix, "bytes": group["bytes"], "files": group["files"], "age_days": age_days})
    if dry_run or not report.collected:
        return report
    gone = set()
    for item in report.collected:
        datastore.delete_prefix(item["prefix"])
        gone.add(item["prefix"])
    for key in cache.entry_keys():
        if key in live:
            continue
        entry = cache.get(key)
        if entry is not None and any(
            isinstance(out, dict) and str(out.get("key", "")).strip("/") in gone for out in entry.outputs.values()
        ):
            cache.delete_entry(key)
            report.entries_removed.append(key)
    return report
