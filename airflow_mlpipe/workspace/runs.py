"""Run records (docs/internals.md, workspace layout).

```
runs/<pipeline>/<run_id>/run.json                               pipeline run record
runs/<pipeline>/<run_id>/steps/<step>.json                      step record
runs/<pipeline>/<run_id>/steps/<step>/attempt-<n>/result.json   written by the runtime
runs/<pipeline>/<run_id>/steps/<step>/attempt-<n>/outputs/      the script's ./outputs, kept
outputs/<pipeline>/<run_id>/<step>/<output>/                    step outputs (manifest last)
```

``run_id`` in keys is ``safe_id(run_id)``, an injective mapping: an id made only of ``[A-Za-z0-9._-]``
stays as it is; any other id keeps a readable form (unsafe characters -> ``_``, at most 96 of them) followed
by ``-x`` and 16 hex digits of the id's sha256, so ``r:1``, ``r+1`` and ``r_1`` get three folders. An id
that already looks like that form is hashed too. The run record keeps the original ``run_id``, and
``open_run`` refuses a second run id on a folder (a collision, or a folder of an older mapping).
"""

from __future__ import annotations

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor

from airflow_mlpipe.errors import ConflictError, NotFoundError, WorkspaceError
from airflow_mlpipe.rules import DEFAULT_DESTINATION, fill_destination, is_plain_segment
from airflow_mlpipe.workspace.datastore import Datastore, check_key
from airflow_mlpipe.workspace.manifest import now_iso
from airflow_mlpipe.workspace.registry import check_name

__all__ = [
    "DamagedRecordError",
    "RunStore",
    "attempt_prefix",
    "output_key",
    "output_prefix",
    "run_prefix",
    "safe_id",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_HASHED = re.compile(r".*-x[0-9a-f]{16}")
_READABLE = 96


def safe_id(run_id: str) -> str:
    """``run_id`` as a key segment, injectively (see the module docstring)."""
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"invalid run id {run_id!r}")
    if len(run_id) <= _READABLE and not _UNSAFE.search(run_id) and not _HASHED.fullmatch(run_id):
        if not is_plain_segment(run_id):  # kept as it is, it names a folder: never '.' or '..'
            raise ValueError(f"invalid run id {run_id!r}: '.' and '..' cannot name a run's folder")
        return run_id
    readable = _UNSAFE.sub("_", run_id)[:_READABLE]
    return f"{readable}-x{hashlib.sha256(run_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


class DamagedRecordError(WorkspaceError):
    """A run record is not valid JSON or not a record: reported, never taken for another run's."""


def _iso(epoch: float) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_prefix(pipeline: str, run_id: str) -> str:
    return f"runs/{check_name(pipeline, 'pipeline name')}/{safe_id(run_id)}"


def output_prefix(pipeline: str, run_id: str, step: str, output: str) -> str:
    """The default key of a step output (``rules.DEFAULT_DESTINATION``)."""
    return output_key(DEFAULT_DESTINATION, pipeline, run_id, step, output)


def output_key(template: str, pipeline: str, run_id: str, step: str, output: str) -> str:
    """The workspace key of a step output: its ``destination`` template filled in with the checked names and
    the run's folder (``safe_id``), a valid key. ValueError with the reason (a placeholder not allowed...)."""
    key = fill_destination(template, pipeline=check_name(pipeline, "pipeline name"), run_id=safe_id(run_id),
                           step=check_name(step, "step name"), output=check_name(output, "output name"))
    return check_key("/".join(part for part in key.split("/") if part not in ("", ".")))


def attempt_prefix(pipeline: str, run_id: str, step: str, attempt: int) -> str:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError(f"invalid attempt {attempt!r}")
    return f"{run_prefix(pipeline, run_id)}/steps/{check_name(step, 'step name')}/attempt-{attempt}"


class RunStore:
    def __init__(self, datastore: Datastore):
        self.datastore = datastore

    def _run_key(self, pipeline: str, run_id: str) -> str:
        return f"{run_prefix(pipeline, run_id)}/run.json"

    def _step_key(self, pipeline: str, run_id: str, step: str) -> str:
        return f"{run_prefix(pipeline, run_id)}/steps/{check_name(step, 'step name')}.json"

    def write_run(self, pipeline: str, run_id: str, doc: dict) -> dict:
        """Write (overwrite) the run record; ``pipeline``, ``run_id`` and ``created`` are filled in."""
        record = {"created": now_iso(), **doc, "pipeline": pipeline, "run_id": run_id}
        self.datastore.put_json(self._run_key(pipeline, run_id), record)
        return record

    def open_run(self, pipeline: str, run_id: str, doc: dict) -> bool:
        """Create the run record unless it exists (the first step of a run writes it; the others, which
        may start at the same time, leave it as it is). True if this call created it.

        Raises ConflictError if the run's folder belongs to another run id: two runs never share a folder."""
        key = self._run_key(pipeline, run_id)
        record = {"created": now_iso(), **doc, "pipeline": pipeline, "run_id": run_id}
        if self.datastore.create_json(key, record):
            return True
        try:
            existing = self.datastore.get_json_or_none(key)
        except WorkspaceError:
            existing = None  # a damaged record is reported by `mlpipe runs`; it names no other run
        owner = existing.get("run_id") if isinstance(existing, dict) else None
        if isinstance(owner, str) and owner != run_id:
            raise ConflictError(
                f"run {run_id!r} of pipeline {pipeline!r} maps to the workspace folder "
                f"{self.datastore.uri_for(run_prefix(pipeline, run_id))}, which already holds run {owner!r}; "
                "refusing to share it. Trigger the run with another run id, or move the old folder away"
            )
        return False

    def update_run(self, pipeline: str, run_id: str, changes: dict) -> dict:
        """Merge ``changes`` (top-level keys) into the run record, compare-and-swap; creates it if absent."""
        key = self._run_key(pipeline, run_id)
        for _ in range(50):
            current = self.datastore.get_json_with_etag(key)
            doc, etag = current if current is not None else ({"created": now_iso()}, None)
            new = {**doc, **changes, "pipeline": pipeline, "run_id": run_id, "updated": now_iso()}
            if self.datastore.put_json_if(key, new, etag):
                return new
        raise ConflictError(f"run record {self.datastore.uri_for(key)} kept changing; retry the update")

    def write_step(self, pipeline: str, run_id: str, step: str, doc: dict) -> dict:
        record = {**doc, "step": step, "updated": now_iso()}
        self.datastore.put_json(self._step_key(pipeline, run_id, step), record)
        return record

    def get_step(self, pipeline: str, run_id: str, step: str) -> dict | None:
        """The step record, or None when it is missing or damaged (a damaged one is never trusted)."""
        doc, _ = self._read(self._step_key(pipeline, run_id, step))
        return doc

    def _read(self, key: str) -> tuple[dict | None, str | None]:
        """(record, None), (None, None) when absent, or (None, why) when the record is damaged: a damaged
        record is reported where it is listed, never a failure that spreads to the other runs."""
        try:
            doc = self.datastore.get_json_or_none(key)
        except WorkspaceError as exc:  # not JSON (truncated, overwritten...)
            return None, str(exc)
        if doc is None:
            return None, None
        if not isinstance(doc, dict):
            return None, f"{self.datastore.uri_for(key)} holds a JSON {type(doc).__name__}, not a record"
        return doc, None

    def read_result(self, pipeline: str, run_id: str, step: str, attempt: int) -> dict | None:
        """The runtime's ``result.json`` for one attempt (None if it wrote none)."""
        return self.datastore.get_json_or_none(f"{attempt_prefix(pipeline, run_id, step, attempt)}/result.json")

    def get_run(self, pipeline: str, run_id: str) -> dict:
        """The run record with ``steps``: {step name: step record}."""
        key = self._run_key(pipeline, run_id)
        doc, damage = self._read(key)
        if damage is not None:
            raise DamagedRecordError(
                f"the record of run {run_id!r} of pipeline {pipeline!r} is damaged: {damage}. Repair or remove "
                f"{self.datastore.uri_for(key)}; the other runs are not affected"
            )
        if doc is None:
            raise NotFoundError(f"run {run_id!r} of pipeline {pipeline!r} is not recorded in {self.datastore.uri}")
        return {**doc, "steps": self._steps(pipeline, run_id)}

    def _steps(self, pipeline: str, run_id: str) -> dict[str, dict]:
        """The step records of a run; a damaged one appears as ``{"status": "damaged", "error": why}``."""
        base = f"{run_prefix(pipeline, run_id)}/steps/"
        steps = {}
        for info in self.datastore.list(base):
            rest = info.key[len(base) :]
            if "/" not in rest and rest.endswith(".json"):
                step_doc, damage = self._read(info.key)
                if damage is not None:
                    step_doc = {"status": "damaged", "error": damage}
                if step_doc is not None:
                    steps[rest.removesuffix(".json")] = step_doc
        return steps

    def pipelines(self) -> list[str]:
        return self.datastore.list_dirs("runs")

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> list[dict]:
        """Run records (without steps), newest first (by ``started``, else ``created``)."""
        pipelines = [check_name(pipeline, "pipeline name")] if pipeline else self.pipelines()
        folders = [(p, rid) for p in pipelines for rid in self.datastore.list_dirs(f"runs/{p}")]
        if not folders:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(folders))) as pool:
            read = list(pool.map(lambda f: self._read(f"runs/{f[0]}/{f[1]}/run.json"), folders))
        docs = []
        for (p, folder), (doc, damage) in zip(folders, read, strict=True):
            if damage is not None:  # listed as damaged (folder name for the run id), the others still listed
                key = f"runs/{p}/{folder}/run.json"
                mtime = next((o.mtime for o in self.datastore.list(key) if o.key == key), None)
                started = now_iso() if mtime is None else _iso(mtime)
                docs.append({"pipeline": p, "run_id": folder, "damaged": damage, "started": started})
            elif doc is not None:
                docs.append(doc)

        def when(doc: dict) -> str:
            return str(doc.get("started") or doc.get("created") or "")

        docs.sort(key=when, reverse=True)
        return docs[: max(0, limit)] if limit is not None else docs

    def find_run(self, run_id: str) -> dict:
        """The run ``run_id`` in whichever pipeline recorded it (with steps)."""
        safe = safe_id(run_id)
        for pipeline in self.pipelines():
            key = f"runs/{pipeline}/{safe}/run.json"
            doc, damage = self._read(key)
            if damage is not None:
                raise DamagedRecordError(f"the record of run {run_id!r} in pipeline {pipeline!r} is damaged: "
                                         f"{damage}. Repair or remove {self.datastore.uri_for(key)}")
            if doc is not None and doc.get("run_id", run_id) == run_id:
                return self.get_run(pipeline, run_id)
        raise NotFoundError(f"no pipeline recorded run {run_id!r} in {self.datastore.uri}")
