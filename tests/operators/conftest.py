"""Fixtures of the operator suite: the migrated Airflow DB, a workspace on each backend (a local
directory; moto S3 for the ``integration`` variant) and a DAGs folder per test."""

from __future__ import annotations

import pytest

from tests.operators.kit import WorkspaceTarget, local_target


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def workspace_target(request, tmp_path) -> WorkspaceTarget:
    """The same test on a ``file://`` workspace and on an ``s3://`` workspace served by moto."""
    if request.param == "local":
        return local_target(tmp_path / "ws")
    uri = request.getfixturevalue("s3_workspace_uri")
    return WorkspaceTarget("s3", uri, dict(request.getfixturevalue("moto_s3_options")))


@pytest.fixture
def local_workspace(tmp_path) -> WorkspaceTarget:
    return local_target(tmp_path / "ws")


@pytest.fixture
def dags_folder(tmp_path):
    path = tmp_path / "dags"
    path.mkdir()
    return path
