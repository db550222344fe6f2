"""Fixtures of the workspace suite: every ``workspace``/``datastore`` test runs on a local directory and on
a real S3 endpoint (moto_server on loopback, marked ``integration``)."""

from __future__ import annotations

import json
import pathlib

import pytest

from airflow_mlpipe.workspace.core import Workspace
from airflow_mlpipe.workspace.datastore import open_datastore

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.integration)]


@pytest.fixture(autouse=True)
def _isolated_cache_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MLPIPE_CACHE_DIR", str(tmp_path_factory.mktemp("mlpipe-cache")))


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def ds_target(request, backend, tmp_path) -> tuple[str, dict]:
    """(workspace URI, open_datastore options) of a fresh, empty workspace."""
    if backend == "local":
        return (tmp_path / "ws").as_uri(), {}
    return request.getfixturevalue("s3_workspace_uri"), dict(request.getfixturevalue("moto_s3_options"))


@pytest.fixture
def datastore(ds_target):
    uri, options = ds_target
    return open_datastore(uri, **options)


@pytest.fixture
def workspace(datastore) -> Workspace:
    return Workspace(datastore)


def make_tree(root: pathlib.Path, files: dict[str, str | bytes]) -> pathlib.Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def subprocess_target(ds_target) -> str:
    """A JSON argument that lets a child process open the same datastore."""
    uri, options = ds_target
    return json.dumps({"uri": uri, "options": options})


def overwrite_in_place(datastore, key: str, data: bytes) -> None:
    """Change a committed file the way a careless user or script would: a local file is rewritten in place
    (same inode, no rename); an S3 object is put again under the same key."""
    local = datastore.local_path(key)
    if local is None:
        datastore.write_bytes(key, data)
        return
    with open(local, "r+b") as fh:
        fh.write(data)
        fh.truncate()
