"""One broken definition in a DAGs folder fails alone and loudly: the other pipelines still load, and
there is exactly one import error, on the broken file's stub, naming the YAML file, the line and the field.

Checked twice: through a real ``DagBag`` in this process, and through the real DAG processor
(``airflow dag-processor --num-runs 1`` in a subprocess with its own AIRFLOW_HOME and freshly migrated
DB), reading what it stored with ``airflow dags list`` / ``list-import-errors -o json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import scaled
from tests.operators.kit import EXAMPLES, make_dags_folder, private_airflow_home

QUICKSTART = (EXAMPLES / "pipelines" / "quickstart.yaml").read_text()
SECOND = QUICKSTART.replace("pipeline: mlpipe_quickstart", "pipeline: second_pipeline")
BROKEN = QUICKSTART.replace("pipeline: mlpipe_quickstart", "pipeline: broken_pipeline").replace(
    "    maximum: 100000\n", "    maximum: 100000\n    minimun: 5\n")  # a typo'd key under params.rows


def broken_line() -> int:
    return BROKEN.splitlines().index("    minimun: 5") + 1


@pytest.fixture
def folder(tmp_path):
    return make_dags_folder(tmp_path / "dags", {"quickstart": QUICKSTART, "second": SECOND, "broken": BROKEN},
                            copy_quickstart_sources=True)


def check_error(message: str, folder) -> None:
    yaml = folder / "pipelines" / "broken.yaml"
    assert f"{yaml}:{broken_line()}: params.rows.minimun" in message, message
    assert "did you mean 'minimum'" in message, message


def test_dagbag_loads_the_others(folder):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert sorted(bag.dag_ids) == ["mlpipe_quickstart", "second_pipeline"]
    assert list(bag.import_errors) == [str(folder / "broken.py")]
    check_error(bag.import_errors[str(folder / "broken.py")], folder)


@pytest.mark.timeout(300)
def test_dag_processor_stores_one_import_error(folder, tmp_path):
    home = private_airflow_home(tmp_path / "home")
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(folder))

    def airflow(*args: str, code: int = 0) -> str:
        proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True,
                              timeout=scaled(240))
        assert proc.returncode == code, proc.stderr[-3000:]
        return proc.stdout

    def airflow_json(*args: str, code: int = 0) -> list:
        out = airflow(*args, "-o", "json", code=code)
        lines = [line for line in out.splitlines() if line.startswith("[")]  # log lines may precede it
        assert len(lines) == 1, out
        return json.loads(lines[0])

    airflow("dag-processor", "--num-runs", "1")
    dags = airflow_json("dags", "list")
    mine = {d["dag_id"]: d for d in dags if str(d["fileloc"]).startswith(str(folder))}
    assert sorted(mine) == ["mlpipe_quickstart", "second_pipeline"]
    assert mine["mlpipe_quickstart"]["owners"] == ["ml-team"]
    errors = [e for e in airflow_json("dags", "list-import-errors", code=1)  # 1: errors exist
              if e["bundle_name"] == "dags-folder"]
    assert [e["filepath"] for e in errors] == ["broken.py"]
    check_error(errors[0]["error"], folder)
