"""Garbage collection of intermediate step outputs (``outputs/<pipeline>/<run_id>/<step>/<output>/``).

An output is collected when its newest object is older than ``older_than_days`` and nothing
references it:
- a *live* cache entry (the entry a ``cache/latest/<pipeline>/<step>.json`` pointer names: what the
  next run of that step would reuse);
- a registered dataset or model version whose ``producing_run`` names it: any string value in
  ``producing_run`` that starts with ``outputs/``, the ``pipeline``/``run_id``/``step``/``output``
  fields together, or a ``cache_key`` (the outputs of that entry);
- an alias history (``<kind>/<name>/aliases/<alias>.json``) that names it the same ways;
- a run that is still running (a step record with ``status: running``): the run's own output folder and
  every output its step records name.
``datasets/`` and ``models/`` are never touched (registered content lives there, copied in). Superseded
cache entries whose outputs are collected are deleted too (a real run only), *before* those outputs: an
interrupted gc never leaves an entry that names a deleted output, and the next gc finishes the work (a
half-deleted output has no manifest, no entry names it, so it is simply collected again). Dry run by default.

Linear in what it examines: every reference is gathered once into a prefix index (a dict of the exact
prefixes and one of their ancestors), then one pass over the listing of ``outputs/`` asks it in O(depth).
On S3 the outputs go with bulk DeleteObjects calls (1,000 keys each, each output's manifest first); a local
folder is removed per output as before.

On S3, multipart uploads left open for more than ``stale_upload_hours`` (default 24; a killed writer leaves
them: invisible, but billed) are aborted too; a step's own later attempt aborts those of its outputs at once.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from airflow_mlpipe.errors import WorkspaceError
from airflow_mlpipe.workspace.cache import CacheEntry, StepCache
from airflow_mlpipe.workspace.datastore import Datastore
from airflow_mlpipe.workspace.registry import KINDS, VersionedRegistry
from airflow_mlpipe.workspace.runs import output_prefix

__all__ = ["KEPT_KINDS", "GcReport", "collect_garbage"]

_DEPTH = 5  # outputs/<pipeline>/<run_id>/<step>/<output>
_WORKERS = 8
_MANIFEST = "_manifest.json"

# why an output is kept, in the order the report shows them
REGISTERED, ALIAS, LIVE, RUNNING, YOUNG = "registered version", "alias history", "live cache entry", \
    "running run", "younger than the cutoff"
KEPT_KINDS = (REGISTERED, ALIAS, LIVE, RUNNING, YOUNG)


@dataclasses.dataclass
class GcReport:
    dry_run: bool
    older_than_days: float
    collected: list[dict] = dataclasses.field(default_factory=list)  # {prefix, bytes, files, age_days}
    kept: list[dict] = dataclasses.field(default_factory=list)  # {prefix, reason, kind, bytes, files}
    entries_removed: list[str] = dataclasses.field(default_factory=list)  # (dry run: would be removed)
    stale_uploads: list[dict] = dataclasses.field(default_factory=list)  # {key, age_hours}: open multipart uploads
    seconds: float = 0.0

    @property
    def bytes(self) -> int:
        return sum(item["bytes"] for item in self.collected)

    @property
    def prefixes(self) -> list[str]:
        return [item["prefix"] for item in self.collected]

    def largest(self, count: int = 10) -> list[dict]:
        """The ``count`` largest collected outputs, largest first."""
        return sorted(self.collected, key=lambda item: (-item["bytes"], item["prefix"]))[:count]

    def by_kind(self) -> list[dict]:
        """[{kind, items, bytes}]: the collected outputs, the kept ones by why, cache entries, uploads."""
        rows = [{"kind": "collected output", "items": len(self.collected), "bytes": self.bytes}]
        for kind in KEPT_KINDS:
            items = [item for item in self.kept if item.get("kind") == kind]
            if items:
                rows.append({"kind": f"kept: {kind}", "items": len(items),
                             "bytes": sum(item.get("bytes", 0) for item in items)})
        if self.entries_removed:
            rows.append({"kind": "superseded cache entry", "items": len(self.entries_removed), "bytes": None})
        if self.stale_uploads:
            rows.append({"kind": "stale multipart upload", "items": len(self.stale_uploads), "bytes": None})
        return rows

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "older_than_days": self.older_than_days, "seconds": round(self.seconds, 3),
                "bytes": self.bytes, "summary": self.by_kind(), "largest": self.largest(),
                "collected": self.collected, "kept": self.kept, "cache_entries_removed": self.entries_removed,
                "stale_uploads": self.stale_uploads}

    def summary(self, top: int = 10) -> str:
        """Counts and bytes per kind, the ``top`` largest collected outputs, the time taken (never every path)."""
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {len(self.collected)} output(s), {self.bytes} bytes (older than {self.older_than_days} days)"
                 f"; kept {len(self.kept)}; {self.seconds:.2f} s"]
        lines += [f"  {row['kind']}: {row['items']}" + (f", {row['bytes']} bytes" if row["bytes"] is not None else "")
                  for row in self.by_kind()]
        if self.collected:
            lines.append(f"largest {min(top, len(self.collected))}:")
            lines += [f"  {item['prefix']}  {item['bytes']} bytes  {item['age_days']:.1f} days"
                      for item in self.largest(top)]
        if self.stale_uploads:
            lines.append(f"{'would abort' if self.dry_run else 'aborted'} {len(self.stale_uploads)} stale multipart upload(s)")
        return "\n".join(lines)


class _PrefixIndex:
    """Prefixes, each with a value; ``match(p)`` is the value of ``p`` itself, of a prefix above ``p`` or of
    one below it (the three ways an output and a reference can overlap), in O(depth)."""

    def __init__(self) -> None:
        self.exact: dict[str, Any] = {}
        self.above: dict[str, Any] = {}  # every proper ancestor of an added prefix -> that prefix's value

    def add(self, prefix: str, value: Any) -> None:
        prefix = prefix.strip("/")
        if not prefix:
            return
        self.exact.setdefault(prefix, value)
        parts = prefix.split("/")
        for i in range(1, len(parts)):
            self.above.setdefault("/".join(parts[:i]), value)

    def match(self, prefix: str) -> Any:
        prefix = prefix.strip("/")
        if prefix in self.exact:
            return self.exact[prefix]
        if prefix in self.above:
            return self.above[prefix]
        parts = prefix.split("/")
        for i in range(len(parts) - 1, 0, -1):
            value = self.exact.get("/".join(parts[:i]))
            if value is not None:
                return value
        return None

    def __len__(self) -> int:
        return len(self.exact)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _named_outputs(doc: Any) -> list[str]:
    """The output prefixes a record names: strings starting with ``outputs/``, and the four fields
    ``pipeline``/``run_id``/``step``/``output`` together (in ``doc`` or any mapping inside it)."""
    found = [text.strip("/") for text in _strings(doc) if text.startswith("outputs/")]
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            fields = [item.get(f) for f in ("pipeline", "run_id", "step", "output")]
            if all(isinstance(f, str) and f for f in fields):
                try:
                    found.append(output_prefix(*fields))
                except ValueError:
                    pass
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def _parallel(fn: Any, items: list) -> list:
    if len(items) < 2:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(_WORKERS, len(items))) as pool:
        return list(pool.map(fn, items))


def _registered(datastore: Datastore, keep: _PrefixIndex) -> dict[str, tuple[str, str]]:
    """Index what registered versions and alias histories name; -> {cache key: (kind, why)} they name."""
    entry_refs: dict[str, tuple[str, str]] = {}
    versions: list[tuple[VersionedRegistry, str, int]] = []
    aliases: list[tuple[VersionedRegistry, str, str]] = []
    for kind in KINDS:
        registry = VersionedRegistry(datastore, kind)
        for name in registry.list_names():
            versions += [(registry, name, number) for number in registry.version_numbers(name)]
            base = f"{kind}/{name}/aliases/"
            for info in datastore.list(base):
                leaf = info.key[len(base) :]
                if leaf.endswith(".json") and "/" not in leaf:
                    aliases.append((registry, name, leaf.removesuffix(".json")))

    def read_version(item: tuple[VersionedRegistry, str, int]) -> tuple[str, Any]:
        registry, name, number = item
        try:
            return registry.kind, registry.get(name, number)
        except (WorkspaceError, ValueError, TypeError):
            return registry.kind, None  # unreadable: it names nothing (`mlpipe datasets show` reports it)

    for kind, version in _parallel(read_version, versions):
        run = getattr(version, "producing_run", None)
        if not isinstance(run, dict):
            continue
        why = (REGISTERED, f"produced {kind[:-1]} {version.ref}")
        for prefix in _named_outputs(run):
            keep.add(prefix, why)
        if isinstance(run.get("cache_key"), str):
            entry_refs.setdefault(run["cache_key"], why)

    def read_alias(item: tuple[VersionedRegistry, str, str]) -> Any:
        registry, name, alias = item
        try:
            return registry, name, alias, registry.alias_record(name, alias)
        except (WorkspaceError, ValueError):
            return registry, name, alias, None

    for registry, name, alias, doc in _parallel(read_alias, aliases):
        why = (ALIAS, f"named in the history of {registry.kind[:-1]} alias {name}@{alias}")
        for prefix in _named_outputs(doc):
            keep.add(prefix, why)
        history = doc.get("history") if isinstance(doc, dict) else None
        for event in history if isinstance(history, list) else []:
            if isinstance(event, dict) and isinstance(event.get("cache_key"), str):
                entry_refs.setdefault(event["cache_key"], why)
    return entry_refs


def _read_entries(cache: StepCache, keys: list[str], set_aside: bool) -> dict[str, CacheEntry]:
    def read(key: str) -> CacheEntry | None:
        try:
            return cache.get(key, set_aside=set_aside)
        except ValueError:
            return None

    return {key: entry for key, entry in zip(keys, _parallel(read, keys), strict=True) if entry is not None}


def _entry_outputs(entry: CacheEntry) -> list[str]:
    return [out["key"].strip("/") for out in entry.outputs.values()
            if isinstance(out, dict) and isinstance(out.get("key"), str)]


def _running(datastore: Datastore, keep: _PrefixIndex) -> None:
    """Index the outputs of every run a step of which is still running (its step records say so)."""
    records: dict[tuple[str, str], list[str]] = {}
    for info in datastore.list("runs"):
        parts = info.key.split("/")  # runs/<pipeline>/<run folder>/steps/<step>.json
        if len(parts) == 5 and parts[3] == "steps" and parts[4].endswith(".json"):
            records.setdefault((parts[1], parts[2]), []).append(info.key)
    keys = [key for group in records.values() for key in group]

    def read(key: str) -> Any:
        try:
            return datastore.get_json_or_none(key)
        except WorkspaceError:
            return None  # damaged: `mlpipe runs` reports it; it says nothing is running

    docs = dict(zip(keys, _parallel(read, keys), strict=True))
    for (pipeline, folder), group in records.items():
        steps = {key: docs.get(key) for key in group}
        running = sorted(key.rsplit("/", 1)[-1].removesuffix(".json") for key, doc in steps.items()
                         if isinstance(doc, dict) and doc.get("status") == "running")
        if not running:
            continue
        why = (RUNNING, f"run {pipeline}/{folder} is still running (step {', '.join(running)})")
        keep.add(f"outputs/{pipeline}/{folder}", why)
        for doc in steps.values():
            if isinstance(doc, dict):
                for prefix in _named_outputs(doc.get("outputs")):  # outputs with another destination
                    keep.add(prefix, why)


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


def _delete_outputs(datastore: Datastore, collected: list[dict], keys: dict[str, list[str]]) -> None:
    """Delete the collected outputs: bulk calls where the datastore has them (S3), else one prefix at a time."""
    bulk = getattr(datastore, "delete_keys", None)
    if bulk is None:
        for item in collected:
            datastore.delete_prefix(item["prefix"])
        return
    # each output's manifest goes first: an output cut short by an interruption is visibly uncommitted
    ordered = [k for item in collected for k in keys[item["prefix"]] if k.endswith("/" + _MANIFEST)]
    ordered += [k for item in collected for k in keys[item["prefix"]] if not k.endswith("/" + _MANIFEST)]
    bulk(ordered)


def collect_garbage(datastore: Datastore, older_than_days: float, dry_run: bool = True, now: float | None = None,
                    stale_upload_hours: float = 24.0) -> GcReport:
    """Delete (or, with ``dry_run``, only list) unreferenced outputs older than ``older_than_days``, and
    abort multipart uploads open for more than ``stale_upload_hours``."""
    if older_than_days < 0:
        raise ValueError("older_than_days must be >= 0")
    if stale_upload_hours < 0:
        raise ValueError("stale_upload_hours must be >= 0")
    started = time.perf_counter()
    now = time.time() if now is None else now
    cache = StepCache(datastore)
    keep = _PrefixIndex()
    entry_refs = _registered(datastore, keep)
    live = cache.live_keys()
    for key, entry in _read_entries(cache, sorted(live | set(entry_refs)), set_aside=False).items():
        why = entry_refs.get(key) or (LIVE, f"live cache entry of {entry.pipeline}/{entry.step}")
        for prefix in _entry_outputs(entry):
            keep.add(prefix, why)
    _running(datastore, keep)

    groups: dict[str, dict] = {}
    keys: dict[str, list[str]] = {}
    for info in datastore.list("outputs"):
        parts = info.key.split("/")
        prefix = "/".join(parts[: min(_DEPTH, len(parts) - 1)])
        group = groups.get(prefix)
        if group is None:
            group = groups[prefix] = {"prefix": prefix, "bytes": 0, "files": 0, "newest": 0.0}
            keys[prefix] = []
        group["bytes"] += info.size
        group["files"] += 1
        group["newest"] = max(group["newest"], info.mtime if info.mtime is not None else now)
        keys[prefix].append(info.key)
    report = GcReport(dry_run=dry_run, older_than_days=older_than_days)
    _stale_uploads(datastore, report, stale_upload_hours, now)
    for prefix, group in sorted(groups.items()):
        age_days = max(0.0, (now - group["newest"]) / 86400.0)
        reason = keep.match(prefix)
        size = {"bytes": group["bytes"], "files": group["files"]}
        if reason is not None:
            report.kept.append({"prefix": prefix, "reason": reason[1], "kind": reason[0], **size})
        elif age_days < older_than_days:
            report.kept.append({"prefix": prefix, "reason": f"younger than {older_than_days} days", "kind": YOUNG,
                                **size})
        else:
            report.collected.append({"prefix": prefix, **size, "age_days": age_days})
    if report.collected:
        _settle_entries(datastore, cache, report, live, keys)
    report.seconds = time.perf_counter() - started
    return report


def _settle_entries(datastore: Datastore, cache: StepCache, report: GcReport, live: set[str],
                    keys: dict[str, list[str]]) -> None:
    """Find the superseded cache entries that name a collected output; unless dry run, delete those entries,
    then the outputs (in that order: no entry ever names a deleted output)."""
    if not report.dry_run:
        # a step may have reused an old entry since the pointers were read: its outputs stay
        fresh = cache.live_keys() - live
        if fresh:
            now_live = _PrefixIndex()
            for entry in _read_entries(cache, sorted(fresh), set_aside=False).values():
                for prefix in _entry_outputs(entry):
                    now_live.add(prefix, (LIVE, f"live cache entry of {entry.pipeline}/{entry.step}"))
            still = []
            for item in report.collected:
                reason = now_live.match(item["prefix"])
                if reason is None:
                    still.append(item)
                else:
                    report.kept.append({"prefix": item["prefix"], "reason": reason[1], "kind": reason[0],
                                        "bytes": item["bytes"], "files": item["files"]})
            report.collected = still
            live = live | fresh
    gone = _PrefixIndex()
    for item in report.collected:
        gone.add(item["prefix"], item["prefix"])
    candidates = sorted(key for key in cache.entry_keys() if key not in live)
    entries = _read_entries(cache, candidates, set_aside=not report.dry_run)
    report.entries_removed = sorted(key for key, entry in entries.items()
                                    if any(gone.match(prefix) is not None for prefix in _entry_outputs(entry)))
    if report.dry_run or not report.collected:
        return
    for key in report.entries_removed:
        cache.delete_entry(key)
    _delete_outputs(datastore, report.collected, keys)
