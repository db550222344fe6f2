"""Fixtures of the factory suite."""

from __future__ import annotations

import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def folder(tmp_path, monkeypatch) -> pathlib.Path:
    """A DAGs folder holding a copy of dags_examples, with its own plan cache (``MLPIPE_CACHE_DIR``)."""
    dags = tmp_path / "dags"
    shutil.copytree(REPO / "dags_examples", dags, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("MLPIPE_CACHE_DIR", str(tmp_path / "cache"))
    return dags
