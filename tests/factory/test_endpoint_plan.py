"""The endpoint DAG goes through the factory's loader and plan cache: the folder is read with the safe loader (a
sibling alias bomb is refused at once), each version is validated with the DAG file's folder as its definitions
folder (as ``load_dag``), and a warm parse builds the same DAG from the plan without the pydantic models; any
change to a file of the folder means a new plan."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.factory import load_dag
from airflow_mlpipe.factory.endpoints import endpoint_dag

REPO = pathlib.Path(__file__).resolve().parents[2]
BOMB = ["x-lol1: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"x-lol{i + 1}: &{c} [{', '.join([f'*{p}'] * 9)}]" for i, (p, c) in enumerate(zip("abcdefgh", "bcdefghi"))
]  # nine lines that expand to 387 million values


def _plans(tmp_path: pathlib.Path) -> list[pathlib.Path]:
    return sorted((tmp_path / "cache" / "plans").glob("endpoint-income_retrain-*.json"))


def _shape(dag) -> dict:
    task = dag.task_dict["run_pipeline"]
    return {
        "params": {k: dag.params.get_param(k).dump() for k in dag.params},
        "dag": (dag.dag_id, dag.description, dag.doc_md, dag.start_date, sorted(dag.tags), repr(dag.default_args),
                dag.catchup, type(dag.timetable).__name__),
        "task": (type(task).__name__, task.versions, task.default_version, task.version_params),
    }


def test_warm_build_equals_cold_build_from_one_plain_json_plan(folder, tmp_path):
    cold = endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    [plan_file] = _plans(tmp_path)
    plan = json.loads(plan_file.read_text())
    assert plan["versions"] == [[1, "income_retrain_v1"], [2, "income_retrain_v2"]] and plan["default"] == 2
    assert plan["dag"]["start_date"] == "2026-01-01T00:00:00+00:00"
    warm = endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    assert _shape(warm) == _shape(cold)
    assert _plans(tmp_path) == [plan_file]
    params = _shape(warm)["params"]
    assert params["pipeline_version"]["schema"]["enum"] == [None, 1, 2]
    assert params["epochs"]["value"] is None and params["epochs"]["schema"]["type"] == ["integer", "null"]
    assert params["regenerate_outputs"]["value"] is False


def test_a_changed_file_in_the_folder_means_a_new_plan(folder, tmp_path):
    endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    v2 = (folder / "pipelines" / "income_retrain.yaml").read_text()
    v3 = v2.replace("version: 2\n", "version: 3\n").replace("default: true", "default: false")
    (folder / "pipelines" / "income_retrain_v3.yaml").write_text(v3)
    dag = endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    assert dag.task_dict["run_pipeline"].versions == {1: "income_retrain_v1", 2: "income_retrain_v2",
                                                      3: "income_retrain_v3"}
    assert dag.task_dict["run_pipeline"].default_version == 2
    assert len(_plans(tmp_path)) == 2

    quickstart = folder / "pipelines" / "quickstart.yaml"  # another pipeline's file: a new plan too
    quickstart.write_text(quickstart.read_text() + "\n# edited\n")
    endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    assert len(_plans(tmp_path)) == 3


def _probe(folder: pathlib.Path, tmp_path: pathlib.Path) -> tuple[str, bool]:
    """Build the endpoint DAG in a fresh process: its dag id, and whether the pydantic models were imported."""
    code = (
        "import sys; from airflow_mlpipe.factory.endpoints import endpoint_dag; "
        f"dag = endpoint_dag({str(folder / 'x.py')!r}, 'income_retrain', 'pipelines'); "
        "print(dag.dag_id, 'airflow_mlpipe.spec.pipeline' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MLPIPE_CACHE_DIR": str(tmp_path / "cache")})
    dag_id, models = out.stdout.split()[-2:]
    return dag_id, models == "True"


@pytest.mark.integration  # two fresh Python processes import Airflow (about 9 s)
def test_a_warm_parse_does_not_load_the_pydantic_models(folder, tmp_path):
    assert _probe(folder, tmp_path) == ("income_retrain", True)  # cold: validates, writes the plan
    assert _probe(folder, tmp_path) == ("income_retrain", False), (
        "the definition models (spec.pipeline) were imported on a warm parse of the endpoint DAG")


def test_an_alias_bomb_next_to_the_definitions_is_refused_at_once(folder, tmp_path):
    """Another pipeline's bomb is skipped; one that may publish the endpoint is a DefinitionError naming its file
    and line. Either way in well under a second: the safe loader measures the aliases before building."""
    bomb = folder / "pipelines" / "bomb.yaml"
    bomb.write_text("\n".join(["pipeline: bomb", *BOMB]) + "\n")
    started = time.perf_counter()
    dag = endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    assert time.perf_counter() - started < 5
    assert dag.task_dict["run_pipeline"].versions == {1: "income_retrain_v1", 2: "income_retrain_v2"}

    bomb.write_text("\n".join(["pipeline: bomb", "version: 3", "endpoint: {name: income_retrain}", *BOMB]) + "\n")
    started = time.perf_counter()
    with pytest.raises(DefinitionError, match=re.escape(f"{bomb} cannot be read (line 9: YAML aliases expand")) as info:
        endpoint_dag(folder / "x.py", "income_retrain", "pipelines")
    assert time.perf_counter() - started < 5
    assert "may publish a version of it" in str(info.value)
    assert len(_plans(tmp_path)) == 1  # the refused folder wrote no plan


def test_versions_are_validated_with_the_dag_files_folder_as_load_dag_does(folder, tmp_path):
    """Definitions next to the DAG file: their source directories must stay inside the DAG file's folder (before,
    the endpoint DAG judged them against the folder above, so ``../outside`` passed here and failed in load_dag)."""
    outside = tmp_path / "outside"
    shutil.copytree(folder / "src" / "income", outside)
    for name in ("income_retrain.yaml", "income_retrain_v1.yaml"):
        text = (folder / "pipelines" / name).read_text()
        (folder / name).write_text(text.replace("source_directory: ../src/income", "source_directory: ../outside"))
    message = f"is outside the definitions folder {folder.resolve()}"
    with pytest.raises(DefinitionError, match=message):
        load_dag(folder / "x.py", "income_retrain.yaml")
    with pytest.raises(DefinitionError, match=message):
        endpoint_dag(folder / "x.py", "income_retrain", ".")
