"""What a reused step loads in a task process of its own.

Under a real scheduler every task runs in a fresh process that parses its DAG file and imports what the
operator needs, so a module imported there is paid by every task of every run. A reused step needs the
workspace, the ``${...}`` reference parser, the value rules and the compute models its constructor checks its
settings with, not the pydantic models of the definition format: this
runs a reused pipeline under ``dag.test()`` in a new Python process (warm DAG parse from the plan cache,
then each step's ``execute``) and checks which of our modules it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, scaled
from tests.operators.kit import activate, load, local_target, make_dags_folder, run

PIPELINE = """
pipeline: tiny_chain
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 0}
compute:
  local: {type: local}
environments:
  plain: {python: python3}
params:
  size: {type: integer, default: 3}
steps:
  s1:
    script: step.py
    source_directory: ../src
    arguments: [--size, "${params.size}", --out, "${outputs.out}"]
    outputs: {out: {}}
  s2:
    script: step.py
    source_directory: ../src
    arguments: [--size, "${params.size}", --src, "${inputs.src}", --out, "${outputs.out}"]
    inputs: {src: "${steps.s1.outputs.out}"}
    outputs: {out: {}}
"""
SCRIPT = """
import argparse, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int)
parser.add_argument("--src", type=pathlib.Path)
parser.add_argument("--out", type=pathlib.Path)
args = parser.parse_args()
prev = (args.src / "v.txt").read_text() if args.src else ""
(args.out / "v.txt").write_text(prev + "x" * args.size)
"""
PROBE = """
import json, sys
from tests.operators.kit import load, run
result = run(load(__import__("pathlib").Path(sys.argv[1]), "tiny_chain"))
print(json.dumps({"state": result.state, "reused": result.reused(),
                  "spec_modules": sorted(m for m in sys.modules if m.startswith("airflow_mlpipe.spec."))}))
"""


@pytest.mark.integration  # a fresh Python process runs a pipeline under dag.test() (about 15 s)
def test_a_reused_step_loads_no_definition_models(airflow_db, tmp_path, monkeypatch):
    dags = make_dags_folder(tmp_path / "dags", {"tiny_chain": PIPELINE}, files={"src/step.py": SCRIPT})
    activate(monkeypatch, dags, local_target(tmp_path / "ws"))
    first = run(load(dags, "tiny_chain"))  # runs both steps and leaves the plan cache warm
    assert first.state == "success" and first.ran() == {"s1", "s2"}, first.states

    out = subprocess.run([sys.executable, "-c", PROBE, str(dags)], capture_output=True, text=True,
                         cwd=REPO, env=dict(os.environ), timeout=scaled(300))
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["state"] == "success" and probe["reused"] == {"s1": True, "s2": True}, probe
    # the reference parser, the value rules and the naming rules (standard library only), and the models of
    # compute targets and environments the operator's constructor checks its settings with (spec.compute,
    # spec.types: about 15 ms): not the definition models (spec.pipeline, spec.steps, spec.api...)
    assert probe["spec_modules"] == ["airflow_mlpipe.spec.compute", "airflow_mlpipe.spec.names",
                                     "airflow_mlpipe.spec.refs", "airflow_mlpipe.spec.types",
                                     "airflow_mlpipe.spec.values"], probe["spec_modules"]
