"""The step runtime ships workspace modules into python3-only images: they import only the stdlib."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = r"""
import sys
for name in ("boto3", "botocore", "s3transfer", "pathspec", "airflow", "pydantic", "yaml"):
    sys.modules[name] = None  # any import of these now fails
import importlib
importlib.import_module(sys.argv[1])
"""


@pytest.mark.parametrize("module", ["datastore", "s3", "manifest", "digests", "snapshot", "registry", "cache", "runs", "gc", "core"])
def test_module_imports_only_stdlib(module):
    proc = subprocess.run([sys.executable, "-c", CHECK, f"airflow_mlpipe.workspace.{module}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_unpack_works_without_pathspec(tmp_path):
    code = r"""
import sys, pathlib
sys.modules["pathspec"] = None
sys.modules["boto3"] = None
from airflow_mlpipe.workspace.datastore import LocalDatastore
from airflow_mlpipe.workspace.snapshot import unpack_snapshot, _write_archive
root = pathlib.Path(sys.argv[1])
(root / "src").mkdir()
(root / "src" / "a.py").write_text("A")
(root / "ws" / "snapshots").mkdir(parents=True)
_write_archive([("a.py", root / "src" / "a.py")], {"a.py": {"size": 1}}, root / "ws" / "snapshots" / "s.tar.gz")
print(unpack_snapshot(LocalDatastore(root / "ws"), "snapshots/s.tar.gz", root / "out"))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "a.py").read_text() == "A"
