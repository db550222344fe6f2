"""The ``Workspace`` facade: one datastore root with its registries, cache, run records and snapshots."""

from __future__ import annotations

import pathlib
from typing import Any

from airflow_mlpipe.workspace.cache import StepCache
from airflow_mlpipe.workspace.datastore import Datastore, open_datastore
from airflow_mlpipe.workspace.gc import GcReport, collect_garbage
from airflow_mlpipe.workspace.manifest import commit_output, read_manifest, verify_output
from airflow_mlpipe.workspace.registry import VersionedRegistry
from airflow_mlpipe.workspace.runs import RunStore, output_prefix
from airflow_mlpipe.workspace.snapshot import Snapshot, snapshot_source, unpack_snapshot

__all__ = ["Workspace"]


class Workspace:
    """``Workspace(datastore)`` or ``Workspace.from_uri("s3://bucket/prefix", endpoint_url=...)``."""

    def __init__(self, datastore: Datastore):
        if not isinstance(datastore, Datastore):
            raise TypeError(f"Workspace needs a Datastore, not {type(datastore).__name__}")
        self.datastore = datastore
        self.datasets = VersionedRegistry(datastore, "datasets")
        self.models = VersionedRegistry(datastore, "models")
        self.cache = StepCache(datastore)
        self.runs = RunStore(datastore)

    @classmethod
    def from_uri(cls, uri: str, **s3_options: Any) -> Workspace:
        return cls(open_datastore(uri, **s3_options))

    @property
    def uri(self) -> str:
        return self.datastore.uri

    def snapshot(
        self,
        source_dir: str | pathlib.Path,
        hash_paths: list[str] | None = None,
        cache_dir: str | pathlib.Path | None = None,
        git: bool = True,
        trust_cache: bool = True,
    ) -> Snapshot:
        """Snapshot ``source_dir``; ``trust_cache=False`` rehashes every file (``regenerate_outputs``)."""
        return snapshot_source(
            self.datastore, source_dir, hash_paths=hash_paths, cache_dir=cache_dir, git=git, trust_cache=trust_cache
        )

    def unpack_snapshot(self, key: str, dest_dir: str | pathlib.Path) -> list[str]:
        return unpack_snapshot(self.datastore, key, dest_dir)

    def output_prefix(self, pipeline: str, run_id: str, step: str, output: str) -> str:
        return output_prefix(pipeline, run_id, step, output)

    def commit_output(self, local_dir: str | pathlib.Path, prefix: str, progress: Any = None) -> dict:
        return commit_output(self.datastore, local_dir, prefix, progress)

    def read_manifest(self, prefix: str) -> dict | None:
        return read_manifest(self.datastore, prefix)

    def verify_output(self, prefix: str, expected_digest: str) -> bool:
        return verify_output(self.datastore, prefix, expected_digest)

    def gc(self, older_than_days: float, dry_run: bool = True, stale_upload_hours: float = 24.0) -> GcReport:
        return collect_garbage(self.datastore, older_than_days, dry_run=dry_run, stale_upload_hours=stale_upload_hours)

    def __repr__(self) -> str:
        return f"Workspace({self.datastore.uri!r})"
