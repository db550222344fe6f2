"""The runtime's version in the step cache key: ``bundle.bundle_digest()`` follows the sources of what is
shipped into the step process, and nothing else. Checked on a copy of the package in a temp dir, in a
fresh Python process per state (the digest is read once per process)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import airflow_mlpipe
from airflow_mlpipe.runtime import bundle

PACKAGE = pathlib.Path(airflow_mlpipe.__file__).resolve().parent
PRINT = "from airflow_mlpipe.runtime import bundle; print(bundle.bundle_digest())"


def digest_of(root: pathlib.Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", PRINT], capture_output=True, text=True, env=env, cwd=root, check=True)
    return out.stdout.strip()


def test_bundle_digest_follows_the_runtime_sources_only(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "airflow_mlpipe", ignore=shutil.ignore_patterns("__pycache__"))
    copy = tmp_path / "airflow_mlpipe"
    first = digest_of(tmp_path)
    assert first == bundle.bundle_digest()  # a copy of the same sources: the same version
    (copy / "operators" / "step.py").write_text((copy / "operators" / "step.py").read_text() + "\n# worker-side only\n")
    assert digest_of(tmp_path) == first
    for rel in ("runtime/context.py", "workspace/manifest.py", "rules.py", "__init__.py"):
        before = digest_of(tmp_path)
        (copy / rel).write_text((copy / rel).read_text() + "\n# changed\n")
        assert digest_of(tmp_path) != before, rel


def test_bundle_digest_is_cheap_and_builds_no_zip():
    bundle._cache.pop("digest", None)
    had_zip = "zip" in bundle._cache
    bundle.bundle_digest()
    assert ("zip" in bundle._cache) == had_zip
