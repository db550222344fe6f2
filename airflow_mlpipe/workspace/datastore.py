"""Datastores: one interface over a local directory and an S3 prefix.

Keys are '/'-separated relative paths below the workspace root (no leading '/', no '..').
This module imports only the standard library at import time (boto3 lazily, inside the S3
backend): the step runtime ships it into images that only have python3.

Contract (implemented by LocalDatastore and S3Datastore):
- read_bytes / write_bytes / exists / delete / list(prefix) / copy
- get_json / put_json (overwrite) / create_json (atomic create-if-absent -> False if it exists;
  S3: put_object(IfNoneMatch='*'); local: os.link/O_EXCL of a temp file)
- upload_file / download_file / upload_dir / download_dir (S3: boto3 transfer manager,
  multipart + concurrency)
- local_path(key) -> pathlib.Path | None  (a real path on this machine: in-place use of inputs)
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


class Datastore(abc.ABC):
    """A place to keep bytes under keys. ``uri`` is the root (file:///abs/dir or s3://bucket/prefix)."""

    uri: str

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def copy(self, src_key: str, dst_key: str) -> None: ...

    @abc.abstractmethod
    def upload_file(self, local_path: str | pathlib.Path, key: str) -> None: ...

    @abc.abstractmethod
    def download_file(self, key: str, local_path: str | pathlib.Path) -> None: ...

    @abc.abstractmethod
    def create_json(self, key: str, doc: Any) -> bool:
        """Atomically create ``key`` with ``doc`` unless it exists. True if created, False if it existed."""

    @abc.abstractmethod
    def local_path(self, key: str) -> pathlib.Path | None: ...

    # Derived operations; backends may override them with faster ones.
    def get_json(self, key: str) -> Any: ...
    def put_json(self, key: str, doc: Any) -> None: ...
    def upload_dir(self, local_dir: str | pathlib.Path, prefix: str) -> list[ObjectInfo]: ...
    def download_dir(self, prefix: str, local_dir: str | pathlib.Path) -> list[ObjectInfo]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def uri_for(self, key: str) -> str: ...


def open_datastore(uri: str, **options: Any) -> Datastore:
    """``file:///abs/dir`` (or a plain absolute path) -> LocalDatastore;
    ``s3://bucket/prefix`` -> S3Datastore(options: endpoint_url, aws_access_key_id,
    aws_secret_access_key, region_name, max_concurrency, multipart_threshold...)."""
    raise NotImplementedError("implemented by the workspace helper")
