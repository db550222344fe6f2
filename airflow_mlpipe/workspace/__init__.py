"""The workspace: datastores (local, S3), dataset and model registries, step cache, run records,
snapshots. Nothing in ``workspace/`` imports Airflow, and every module imports only the standard
library at import time (boto3 and pathspec are imported when used): the step runtime ships
``datastore.py``, ``s3.py`` and ``manifest.py`` into images that only have python3 (it unpacks snapshots
with ``airflow_mlpipe/rules.py``). This ``__init__`` imports nothing eagerly, so importing one submodule stays cheap.

Public names (loaded on first access): ``Workspace``, ``open_datastore``, ``Datastore``,
``LocalDatastore``, ``S3Datastore``, ``VersionedRegistry``, ``Version``, ``StepCache``, ``CacheEntry``,
``cache_key``, ``RunStore``, ``safe_id``, ``Snapshot``, ``snapshot_source``, ``unpack_snapshot``,
``collect_garbage``, ``GcReport``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Workspace": "core",
    "open_datastore": "datastore",
    "Datastore": "datastore",
    "LocalDatastore": "datastore",
    "ObjectInfo": "datastore",
    "S3Datastore": "s3",
    "VersionedRegistry": "registry",
    "Version": "registry",
    "StepCache": "cache",
    "CacheEntry": "cache",
    "cache_key": "cache",
    "RunStore": "runs",
    "safe_id": "runs",
    "output_prefix": "runs",
    "output_key": "runs",
    "Snapshot": "snapshot",
    "snapshot_source": "snapshot",
    "unpack_snapshot": "snapshot",
    "collect_garbage": "gc",
    "GcReport": "gc",
    "commit_output": "manifest",
    "read_manifest": "manifest",
    "verify_output": "manifest",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
