"""Suite-wide settings. Airflow reads its configuration when it is first imported, so the environment of
the whole session is set here, before any test module imports Airflow: a throw-away AIRFLOW_HOME (SQLite),
no example DAGs, a 1 s retry delay (so dag.test() does not sleep 5 minutes before a retry), and caches
(venvs, file hashes) shared by the session so each environment is built once.

Every wait of the suite comes from one setting: ``MLPIPE_TEST_TIMEOUT_FACTOR`` (default 1) multiplies the
timeouts the tests and fixtures pass (``scaled(seconds)``) and every ``pytest.mark.timeout``, so a CI on a
busy machine raises them all at once: ``MLPIPE_TEST_TIMEOUT_FACTOR=3 make test``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

_SESSION = pathlib.Path(tempfile.mkdtemp(prefix="mlpipe-tests-"))
os.environ.setdefault("AIRFLOW_HOME", str(_SESSION / "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY"] = "1"
os.environ.setdefault("MLPIPE_VENV_DIR", str(_SESSION / "venvs"))
os.environ.setdefault("MLPIPE_CACHE_DIR", str(_SESSION / "cache"))
os.environ.setdefault("MLPIPE_SCRATCH_DIR", str(_SESSION / "scratch"))

import pytest  # noqa: E402

pytest_plugins = ["tests.fixtures.moto", "tests.fixtures.docker"]

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_FACTOR = max(1.0, float(os.environ.get("MLPIPE_TEST_TIMEOUT_FACTOR") or 1))


def scaled(seconds: float) -> float:
    """``seconds`` times MLPIPE_TEST_TIMEOUT_FACTOR: every timeout a test or fixture waits with."""
    return seconds * TIMEOUT_FACTOR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Scale each test's ``pytest.mark.timeout`` by MLPIPE_TEST_TIMEOUT_FACTOR (the closest marker wins)."""
    if TIMEOUT_FACTOR == 1:
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        if marker is not None and marker.args:
            item.add_marker(pytest.mark.timeout(scaled(float(marker.args[0]))), append=False)


@pytest.fixture(scope="session")
def airflow_db() -> pathlib.Path:
    """A migrated SQLite metadata DB for dag.test() (once per session)."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=dict(os.environ), timeout=scaled(300))
    return pathlib.Path(os.environ["AIRFLOW_HOME"])


def use_dags_folder(monkeypatch: pytest.MonkeyPatch, path: pathlib.Path) -> None:
    """Point Airflow (and so dag.test(), which syncs the DAG bundle) at ``path`` for one test. The bundle
    list is what dag.test() reads; the DAGS_FOLDER constant was fixed when Airflow was imported."""
    import json

    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(path))
    monkeypatch.setenv(
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST",
        json.dumps([{"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                     "kwargs": {"path": str(path)}}]),
    )
