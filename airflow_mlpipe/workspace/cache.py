"""The step cache (DESIGN.md section 5; docs/internals.md "Cache key").

```
cache/entries/<key>.json          {key, pipeline, step, components, outputs, metrics, run, created, fingerprints}
cache/latest/<pipeline>/<step>.json   {key, components, created, run}: the step's last entry
cache/unnamed/<sha>.json          {key, pipeline, step}: the last entry with these components but
                                  the step's name (so a renamed step's miss can say so)
```

``key = sha256(canonical_json(components))``. Components, as the step operator builds them (the one
table: docs/reuse.md "Key components"): ``{"step": {"name", "script", "argv", "inputs", "outputs"},
"snapshot": <Snapshot.sha256>, "environment": {"python", "python_version", "packages" | "image",
"image_id", "env": {name: digest}}, "compute": {"type", ...}, "runtime": {"airflow_mlpipe", "bundle"},
"params": {name: value}, "inputs": {name: digest}}``. ``components["snapshot"]`` may also be a dict
``{"sha256": ..., "files": {path: sha256}}``; with a plain sha the file lists come from the snapshot
sidecars (``snapshots/<sha>.json``), so ``explain`` can name the files that changed.

A hit is used only if every output still holds what was recorded: its manifest exists with the recorded
digest and the files are still those the manifest lists (``manifest.output_problems``). The entry keeps, per
output, in ``fingerprints``, a summary of the store's fingerprints taken when the entry was committed and
the content verified: if they still sum up to it, the lookup reads no manifest. If not (an entry without
summaries, metadata touched), the output's small ``_digest.json`` is read next: if its digest and content
fingerprint summary still match, the manifest is not read either; otherwise the manifest decides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from airflow_mlpipe.errors import WorkspaceError
from airflow_mlpipe.workspace.datastore import Datastore
from airflow_mlpipe.workspace.manifest import (
    canonical_json,
    fingerprint_summary,
    now_iso,
    output_problems,
    read_manifest,
    verify_content,
    vouched_digest,
)
from airflow_mlpipe.workspace.registry import check_name
from airflow_mlpipe.workspace.snapshot import read_snapshot_files

__all__ = ["CacheEntry", "StepCache", "cache_key"]

_HEX = set("0123456789abcdef")
_log = logging.getLogger(__name__)


def cache_key(components: dict) -> str:
    """sha256 of the canonical JSON of ``components`` (sort_keys, separators (',', ':'))."""
    if not isinstance(components, dict):
        raise TypeError("cache components must be a dict")
    try:
        return hashlib.sha256(canonical_json(components)).hexdigest()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cache components are not plain JSON data: {exc}") from exc


def unnamed_key(components: dict) -> str | None:
    """The key of ``components`` without the step's name (None if they name no step)."""
    step = components.get("step")
    if not isinstance(step, dict) or "name" not in step:
        return None
    return cache_key({**components, "step": {k: v for k, v in step.items() if k != "name"}})


def _check_key(key: str) -> str:
    if not isinstance(key, str) or len(key) != 64 or not set(key) <= _HEX:
        raise ValueError(f"invalid cache key {key!r}: expected a sha256 hex digest")
    return key


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    key: str
    pipeline: str
    step: str
    components: dict
    outputs: dict  # {name: {"key": prefix, "digest": manifest digest, ...}}
    metrics: dict
    run: dict
    created: str
    fingerprints: dict = dataclasses.field(default_factory=dict)  # {output name: fingerprint summary}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict) -> CacheEntry:
        fields = {f.name for f in dataclasses.fields(cls)}
        data = {k: doc.get(k) for k in fields}
        for name in ("components", "outputs", "metrics", "run", "fingerprints"):
            data[name] = data[name] or {}
        return cls(**data)

    @classmethod
    def parse(cls, doc: Any, key: str) -> CacheEntry:
        """The entry in ``doc`` (stored under ``key``), or ValueError saying what is wrong with it."""
        if not isinstance(doc, dict):
            raise ValueError(f"a JSON {type(doc).__name__}, not an entry")
        entry = cls.from_dict(doc)
        if entry.key != key:
            raise ValueError(f"its key is {entry.key!r}, not the one it is stored under")
        for name in ("components", "outputs", "metrics", "run"):
            if not isinstance(getattr(entry, name), dict):
                raise ValueError(f"{name!r} is a {type(getattr(entry, name)).__name__}, not a mapping")
        for name, out in entry.outputs.items():
            if not (isinstance(out, dict) and isinstance(out.get("key"), str) and isinstance(out.get("digest"), str)):
                raise ValueError(f"output {name!r} has no key and digest")
        return entry


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and set(value) <= _HEX:
        return value[:12]
    return repr(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else str(value)


class StepCache:
    def __init__(self, datastore: Datastore):
        self.datastore = datastore
        self.damaged: dict[str, str] = {}  # key -> why its entry was set aside (this process)
        self._stale: dict[str, dict[str, list[str]]] = {}  # key -> stale outputs found by the last lookup

    @staticmethod
    def entry_key(key: str) -> str:
        return f"cache/entries/{_check_key(key)}.json"

    @staticmethod
    def latest_key(pipeline: str, step: str) -> str:
        return f"cache/latest/{check_name(pipeline, 'pipeline name')}/{check_name(step, 'step name')}.json"

    @staticmethod
    def unnamed_pointer(components: dict) -> str | None:
        key = unnamed_key(components)
        return f"cache/unnamed/{key}.json" if key else None

    def get(self, key: str, set_aside: bool = True) -> CacheEntry | None:
        """The entry stored under ``key`` (not checked against its outputs). A damaged entry (not JSON, not
        an entry) is a miss: it is moved to ``cache/damaged/`` for a person to look at, and logged
        (``set_aside=False``: only treated as absent, e.g. by a dry-run gc)."""
        path = self.entry_key(key)
        try:
            doc = self.datastore.get_json_or_none(path)
            if doc is None:
                return None
            return CacheEntry.parse(doc, key)
        except (WorkspaceError, ValueError, TypeError) as exc:
            if set_aside:
                self._set_aside(key, str(exc))
            return None

    def _set_aside(self, key: str, why: str) -> None:
        path = self.entry_key(key)
        aside = f"cache/damaged/{key}-{now_iso().replace(':', '').replace('.', '')}.json"
        try:
            self.datastore.write_bytes(aside, self.datastore.read_bytes(path))
            self.datastore.delete(path)
            where = self.datastore.uri_for(aside)
        except WorkspaceError as exc:  # cannot move it: still a miss; the next commit overwrites it
            where = f"{self.datastore.uri_for(path)} (could not be moved: {exc})"
        self.damaged[key] = f"the cache entry was damaged ({why}) and was set aside as {where}"
        _log.warning("step cache: %s; the step runs again", self.damaged[key])

    def stale_outputs(self, entry: CacheEntry) -> dict[str, list[str]]:
        """{output name: why it no longer holds what the entry recorded} for each such output ({}: none)."""
        stale = {}
        for name, out in sorted(entry.outputs.items()):
            if not isinstance(out, dict) or not out.get("key") or not out.get("digest"):
                stale[name] = ["the cache entry does not record it"]
                continue
            problems = output_problems(self.datastore, out["key"], out["digest"], entry.fingerprints.get(name))
            if problems:
                stale[name] = problems
        return stale

    def lookup(self, key: str) -> CacheEntry | None:
        """The entry for ``key`` if it exists and every output it names still holds what it recorded, else None."""
        entry = self.get(key)
        if entry is None:
            return None
        stale = self.stale_outputs(entry)
        if stale:
            self._stale[key] = stale  # explain() reports these without walking the outputs again
            return None
        return entry

    def commit(
        self,
        key: str,
        pipeline: str,
        step: str,
        components: dict,
        outputs: dict,
        metrics: dict | None = None,
        run: dict | None = None,
    ) -> CacheEntry:
        """Record that ``components`` produced ``outputs``. Every output must already be committed
        (manifest present with the given digest). Writes the entry, then the step's ``latest`` pointer."""
        if cache_key(components) != _check_key(key):
            raise ValueError("cache key does not match its components: compute it with cache_key(components)")
        fingerprints = {}
        for name, out in outputs.items():
            if not isinstance(out, dict) or "key" not in out or "digest" not in out:
                raise ValueError(f"output {name!r} must be a dict with 'key' and 'digest'")
            fingerprints[name] = self._verified_summary(step, name, out)
        entry = CacheEntry(key, pipeline, step, components, dict(outputs), dict(metrics or {}), dict(run or {}),
                           now_iso(), fingerprints)
        latest = self.latest_key(pipeline, step)
        self.datastore.put_json(self.entry_key(key), entry.to_dict())
        self.datastore.put_json(latest, {"key": key, "components": components, "created": entry.created, "run": entry.run})
        unnamed = self.unnamed_pointer(components)
        if unnamed:
            self.datastore.put_json(unnamed, {"key": key, "pipeline": pipeline, "step": step})
        return entry

    def _verified_summary(self, step: str, name: str, out: dict) -> str | None:
        """Check that output ``name`` is committed with its digest and still holds its content; return the
        summary of the store's fingerprints below it, taken first (settled), for fast lookups (None if some
        file is too recent to trust)."""
        current = self.datastore.fingerprints(out["key"], settle=True)
        if vouched_digest(self.datastore, out["key"], current) == out["digest"]:  # as sealed: no manifest read
            return fingerprint_summary(self.datastore.fingerprint_kind, current)
        manifest = read_manifest(self.datastore, out["key"])
        if manifest is None or manifest.get("digest") != out["digest"]:
            raise WorkspaceError(
                f"output {name!r} of step {step!r} is not committed at {self.datastore.uri_for(out['key'])} "
                "with that digest; commit the output before the cache entry"
            )
        problems = verify_content(self.datastore, out["key"], manifest, current)
        if problems:
            raise WorkspaceError(
                f"output {name!r} of step {step!r} at {self.datastore.uri_for(out['key'])} changed after it was "
                f"committed ({'; '.join(problems)}); run the step again"
            )
        return fingerprint_summary(self.datastore.fingerprint_kind, current)

    def latest(self, pipeline: str, step: str) -> dict | None:
        """The step's last entry pointer; None when absent or damaged (the next commit rewrites it)."""
        try:
            doc = self.datastore.get_json_or_none(self.latest_key(pipeline, step))
        except WorkspaceError:
            return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("components", {}), dict) else None

    def explain(self, pipeline: str, step: str, components: dict) -> list[str]:
        """Why ``components`` miss the cache, compared with the step's last entry (human-readable).
        An empty list means: same components and a usable entry (a hit)."""
        previous = self.latest(pipeline, step)
        if previous is None:
            previous = self._renamed(components)
            if previous is None:
                return ["no previous run of this step"]
        old = previous.get("components") or {}
        reasons: list[str] = []
        script = (components.get("step") or {}).get("script")
        self._explain_step(old.get("step") or {}, components.get("step") or {}, reasons)
        self._explain_snapshot(old.get("snapshot"), components.get("snapshot"), script, reasons)
        explain_environment(old.get("environment"), components.get("environment"), reasons)
        explain_settings("compute", old.get("compute"), components.get("compute"), reasons)
        explain_settings("runtime", old.get("runtime"), components.get("runtime"), reasons)
        self._explain_map("param", old.get("params") or {}, components.get("params") or {}, reasons, digest=False)
        self._explain_map("input", old.get("inputs") or {}, components.get("inputs") or {}, reasons, digest=True)
        known = {"step", "snapshot", "environment", "compute", "runtime", "params", "inputs"}
        for name in sorted((set(old) | set(components)) - known):
            if old.get(name) != components.get(name):
                reasons.append(f"{name} changed")
        key = cache_key(components)
        entry = self.get(key)
        if key in self.damaged:
            return [*reasons, self.damaged[key]] if reasons else [self.damaged[key]]
        stale = self._stale.pop(key, None) or (self.stale_outputs(entry) if entry is not None else {})
        if stale:  # these very components have an entry: its outputs, not the differences above, are why
            return [f"output {name}: {problem}" for name, problems in stale.items() for problem in problems]
        if not reasons and entry is None:
            reasons.append("same components, but the cache entry is gone")
        return reasons

    def _renamed(self, components: dict) -> dict | None:
        """The last entry with the same components under another step name, as a ``latest`` doc."""
        pointer = self.unnamed_pointer(components)
        doc = self.datastore.get_json_or_none(pointer) if pointer else None
        if not isinstance(doc, dict) or not isinstance(doc.get("key"), str):
            return None
        try:
            entry = self.get(doc["key"])
        except ValueError:
            return None
        return {"key": entry.key, "components": entry.components} if entry is not None else None

    @staticmethod
    def _explain_step(old: dict, new: dict, reasons: list[str]) -> None:
        for field in sorted(set(old) | set(new)):
            before, after = old.get(field), new.get(field)
            if before == after:
                continue
            if field == "name":
                reasons.append(f"step name {before} -> {after}" if before is not None
                               else f"step name {after} is now part of the key (previous entry predates it)")
            elif field == "script":
                reasons.append(f"script: {before} -> {after}")
            elif field in ("argv", "arguments"):
                reasons.append(f"arguments: {before} -> {after}")
            else:
                reasons.append(f"step {field}: {before!r} -> {after!r}")

    def _snapshot_files(self, value: Any) -> dict[str, str] | None:
        if isinstance(value, dict):
            files = value.get("files")
            if isinstance(files, dict):
                return {p: (m["sha256"] if isinstance(m, dict) else m) for p, m in files.items()}
            value = value.get("sha256")
        if isinstance(value, str):
            files = read_snapshot_files(self.datastore, value)
            if files is not None:
                return {p: m.get("sha256") for p, m in files.items()}
        return None

    def _explain_snapshot(self, old: Any, new: Any, script: str | None, reasons: list[str]) -> None:
        if old == new:
            return
        old_sha = old.get("sha256") if isinstance(old, dict) else old
        new_sha = new.get("sha256") if isinstance(new, dict) else new
        if old_sha == new_sha:
            if old != new:  # e.g. the archive key moved: files outside hash_paths changed
                reasons.append("source snapshot changed outside hash_paths (put only Snapshot.sha256 in the key)")
            return
        before, after = self._snapshot_files(old), self._snapshot_files(new)
        if before is None or after is None:
            reasons.append(f"source snapshot changed: {_short(old_sha)} -> {_short(new_sha)}")
            return
        found = False
        for path in sorted(set(before) | set(after)):
            if before.get(path) == after.get(path):
                continue
            found = True
            if path == script:
                reasons.append(f"script {path} " + ("changed" if path in before and path in after else "added" if path in after else "removed"))
            elif path not in before:
                reasons.append(f"file {path} was added to the snapshot")
            elif path not in after:
                reasons.append(f"file {path} was removed from the snapshot")
            else:
                reasons.append(f"file {path} of the snapshot changed")
        if not found:
            reasons.append(f"source snapshot changed: {_short(old_sha)} -> {_short(new_sha)}")

    @staticmethod
    def _explain_map(what: str, old: dict, new: dict, reasons: list[str], digest: bool) -> None:
        for name in sorted(set(old) | set(new)):
            if name not in old:
                reasons.append(f"{what} {name} added" + ("" if digest else f" (= {_short(new[name])})"))
            elif name not in new:
                reasons.append(f"{what} {name} removed" + ("" if digest else f" (was {_short(old[name])})"))
            elif old[name] != new[name]:
                if digest:
                    reasons.append(f"{what} {name}: digest {_short(old[name])} -> {_short(new[name])}")
                else:
                    reasons.append(f"{what} {name}: {_short(old[name])} -> {_short(new[name])}")

    # -- for gc
    def entry_keys(self) -> list[str]:
        out = []
        for info in self.datastore.list("cache/entries"):
            name = info.key.rsplit("/", 1)[-1].removesuffix(".json")
            if len(name) == 64 and set(name) <= _HEX:
                out.append(name)
        return out

    def live_keys(self) -> set[str]:
        """Keys a ``cache/latest`` pointer names: the entries the next run of each step would reuse."""
        live = set()
        for info in self.datastore.list("cache/latest"):
            doc = self.datastore.get_json_or_none(info.key)
            if isinstance(doc, dict) and isinstance(doc.get("key"), str):
                live.add(doc["key"])
        return live

    def delete_entry(self, key: str) -> None:
        entry = self.get(key)
        self.datastore.delete(self.entry_key(key))
        pointer = self.unnamed_pointer(entry.components) if entry is not None else None
        if pointer:
            doc = self.datastore.get_json_or_none(pointer)
            if isinstance(doc, dict) and doc.get("key") == key:
                self.datastore.delete(pointer)


def _packages(value: Any) -> dict[str, str]:
    found = {}
    for item in value or []:
        name, _, version = str(item).partition("==")
        found[name] = version
    return found


_ENVIRONMENT_ORDER = ("python", "python_version", "image", "image_id", "packages", "env")


def explain_environment(old: Any, new: Any, reasons: list[str]) -> None:
    """Name what changed in ``components["environment"]``: interpreter, python version, each package
    (``package six 1.16.0 -> 1.17.0``), the image and its ID, each env variable by name (never a value)."""
    if old == new:
        return
    if not isinstance(old, dict) or not isinstance(new, dict):
        older = isinstance(old, dict) != isinstance(new, dict)
        reasons.append("environment changed" + (" (the previous entry recorded it in an older format)" if older else ""))
        return
    fields = set(old) | set(new)
    for field in [f for f in _ENVIRONMENT_ORDER if f in fields] + sorted(fields - set(_ENVIRONMENT_ORDER)):
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        if field == "python":
            reasons.append(f"environment: interpreter {before} -> {after}")
        elif field == "python_version":
            reasons.append(f"environment: python {before} -> {after}")
        elif field == "packages":
            was, now = _packages(before), _packages(after)
            for name in sorted(set(was) | set(now)):
                if name not in was:
                    reasons.append(f"environment: package {name} {now[name]} added")
                elif name not in now:
                    reasons.append(f"environment: package {name} {was[name]} removed")
                elif was[name] != now[name]:
                    reasons.append(f"environment: package {name} {was[name]} -> {now[name]}")
        elif field == "image":
            reasons.append(f"image {before} -> {after}")
        elif field == "image_id":
            if old.get("image") == new.get("image"):
                reasons.append(f"image {new.get('image')} changed: {_short_id(before)} -> {_short_id(after)}")
        elif field == "env":
            _explain_env(before if isinstance(before, dict) else {}, after if isinstance(after, dict) else {}, reasons)
        else:
            reasons.append(f"environment {field}: {_text(before)} -> {_text(after)}")


def _explain_env(old: dict, new: dict, reasons: list[str]) -> None:
    for name in sorted(set(old) | set(new)):
        if name not in old:
            reasons.append(f"env {name} added")
        elif name not in new:
            reasons.append(f"env {name} removed")
        elif old[name] != new[name]:
            reasons.append(f"env {name} changed")


def explain_settings(what: str, old: Any, new: Any, reasons: list[str]) -> None:
    """Name each changed field of ``components["compute"]`` or ``components["runtime"]``."""
    if old == new:
        return
    if not isinstance(old, dict) or not isinstance(new, dict):
        reasons.append(f"{what} changed" if old is not None else f"{what} is now part of the key (previous entry predates it)")
        return
    for field in sorted(set(old) | set(new)):
        before, after = old.get(field), new.get(field)
        if before == after:
            continue
        if field == "env" and isinstance(before, dict) and isinstance(after, dict):
            _explain_env(before, after, reasons)
        else:
            reasons.append(f"{what}: {field} {_text(before)} -> {_text(after)}")


def _text(value: Any) -> str:
    """A value in a reason: digests shortened, strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return _short(value) if len(value) == 64 and set(value) <= _HEX else value
    return json.dumps(value, sort_keys=True)


def _short_id(value: Any) -> str:
    text = str(value)
    return text[:19] if text.startswith("sha256:") else _text(value)
