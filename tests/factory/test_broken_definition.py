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


@pytest.mark.integration  # runs a real `airflow dag-processor` (~15 s)
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


def test_source_directory_outside_the_dags_folder_fails_alone(folder, tmp_path):
    """The factory judges source directories against the DAG file's folder (the DAGs folder): a definition
    next to its stub that names ``../outside`` fails alone, although that folder exists and holds the
    scripts."""
    from airflow.dag_processing.dagbag import DagBag

    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("prep.py", "train.py"):
        (outside / name).write_text("print('not the DAGs folder')\n")
    escape = QUICKSTART.replace("pipeline: mlpipe_quickstart", "pipeline: escape_pipeline").replace(
        "source_directory: ../src/quickstart", "source_directory: ../outside")
    (folder / "escape.yaml").write_text(escape)
    (folder / "escape.py").write_text('from airflow_mlpipe.factory import load_dag\n\ndag = load_dag(__file__, "escape.yaml")\n')
    bag = DagBag(dag_folder=str(folder))
    assert sorted(bag.dag_ids) == ["mlpipe_quickstart", "second_pipeline"]
    assert sorted(bag.import_errors) == [str(folder / "broken.py"), str(folder / "escape.py")]
    message = bag.import_errors[str(folder / "escape.py")]
    line = escape.splitlines().index("    source_directory: ../outside") + 1
    assert (f"{folder / 'escape.yaml'}:{line}: steps.prep.source_directory: source directory '../outside' is "
            f"outside the definitions folder {folder.resolve()} (it resolves to {outside.resolve()})") in message, message


def test_an_alias_bomb_fails_alone_and_at_once(folder):
    """A billion-laughs definition is an import error of its own stub, found in well under a second; the
    other pipelines load (the DagBag would otherwise hang and grow to gigabytes)."""
    import time

    from airflow.dag_processing.dagbag import DagBag

    lines = QUICKSTART.splitlines()
    bomb = ["x-lol1: &a [x, x, x, x, x, x, x, x, x]"]
    bomb += [f"x-lol{i + 1}: &{c} [{', '.join([f'*{p}'] * 9)}]" for i, (p, c) in enumerate(zip("abcdefgh", "bcdefghi"))]
    text = "\n".join([*bomb, *lines]) + "\n"
    (folder / "pipelines" / "broken.yaml").write_text(text.replace("mlpipe_quickstart", "bomb_pipeline"))
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(folder))
    elapsed = time.perf_counter() - started
    assert elapsed < 30, elapsed  # the whole folder; the bomb itself is refused in about a millisecond
    assert sorted(bag.dag_ids) == ["mlpipe_quickstart", "second_pipeline"]
    assert list(bag.import_errors) == [str(folder / "broken.py")]
    message = bag.import_errors[str(folder / "broken.py")]
    assert (f"{folder / 'pipelines' / 'broken.yaml'}:6: YAML aliases expand the value on this line to 597,871 "
            "values, more than the 100,000 that aliases may add to a definition") in message, message
