"""The layer contracts of pyproject.toml (import-linter, run by `make lint` and .ci/run) hold on this tree, and
each one fails when an import breaks it: the package is copied, one import is added to one module, and
lint-imports is run on the copy (a real import graph, built by grimp from the copied sources)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LINT_IMPORTS = pathlib.Path(sys.executable).with_name("lint-imports")

# contract name -> (module to edit, import added at its end)
BREAKERS = {
    "the layers, top to bottom":
        ("client.py", "import airflow_mlpipe.factory  # noqa"),
    "spec imports no Airflow and nothing of ours but errors and rules":
        ("spec/names.py", "import airflow.models  # noqa"),
    "workspace and runtime import no Airflow and nothing above them":
        ("runtime/context.py", "from airflow_mlpipe.operators import common  # noqa"),
    "operators never import the factory or the CLI":
        ("operators/common.py", "import airflow_mlpipe.factory.builders  # noqa"),
    "the CLI's workspace commands import no Airflow":
        ("cli/runs.py", "from airflow_mlpipe.assets import dataset_asset  # noqa"),
    "nothing imports the CLI":
        ("workspace/gc.py", "import airflow_mlpipe.cli.common  # noqa"),
}


def _lint(root: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture()
def tree(tmp_path):
    shutil.copytree(REPO / "airflow_mlpipe", tmp_path / "airflow_mlpipe",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_contracts_are_the_ones_documented():
    import tomllib

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["name"] for c in contracts} == set(BREAKERS)
    assert "lint-imports" in (REPO / "Makefile").read_text()


def test_every_contract_is_kept_on_this_tree(tree):
    result = _lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(BREAKERS)} kept, 0 broken." in result.stdout
    # the copy was analysed, not the installed package: its module count is the tree's
    assert "Analyzed" in result.stdout


@pytest.mark.parametrize("contract", sorted(BREAKERS))
def test_an_import_that_breaks_a_contract_fails_it(tree, contract):
    module, line = BREAKERS[contract]
    path = tree / "airflow_mlpipe" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    result = _lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    # this contract is broken (an Airflow import in spec also breaks the CLI's: the CLI reads definitions)
    assert f"{contract} BROKEN" in result.stdout, result.stdout
    report = result.stdout.split("Broken contracts", 1)[1]
    section = report.split(f"{contract}\n", 1)[1]
    assert f"airflow_mlpipe.{module[:-3].replace('/', '.')}" in section, section[:1500]


def test_rules_sit_below_spec_runtime_and_workspace(tree):
    """rules.py (shared by the three, shipped with the runtime) may import errors only: an import of the
    workspace there breaks the layers."""
    path = tree / "airflow_mlpipe" / "rules.py"
    path.write_text(path.read_text() + "\nimport airflow_mlpipe.workspace.datastore  # noqa\n")
    result = _lint(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the layers, top to bottom BROKEN" in result.stdout, result.stdout
    assert "airflow_mlpipe.rules -> airflow_mlpipe.workspace.datastore" in result.stdout, result.stdout
