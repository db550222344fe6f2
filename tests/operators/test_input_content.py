"""Inputs are what their bytes are, through Airflow (DESIGN.md section 5), on a local and an S3 (moto) workspace.

``dag.test()`` runs a pipeline (real step subprocesses, real workspace) where:

- ``m`` is a careless script that appends to its input, an output of ``a``; ``b`` reads ``a``'s output after
  ``m`` ran: ``a``'s committed output must not change, ``b`` must read what ``a`` wrote, and an identical
  rerun must reuse everything;
- ``f`` reads a workspace folder without manifest (a ``path`` param), ``g`` a workspace folder committed with
  a manifest; both changed in place between runs: the step re-runs, keyed on the real content;
- ``d`` reads a registered dataset whose committed data is then altered in place: the step is refused.
"""

from __future__ import annotations

import pytest

from airflow_mlpipe.workspace.manifest import build_manifest
from tests.operators.kit import activate, load, make_dags_folder, run, with_requirements
from tests.workspace.conftest import make_tree, overwrite_in_place

PIPELINE = """
pipeline: input_content
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 0}
compute:
  local: {type: local}
environments:
  plain: {python: python3, requirements: REQUIREMENTS}
params:
  plain: {type: path, default: data/plain, description: a folder without manifest}
  committed: {type: path, default: data/committed, description: a folder committed with a manifest}
steps:
  a:
    script: steps.py
    source_directory: ../src
    arguments: [write, --out, "${outputs.out}"]
    outputs: {out: {}}
  m:
    script: steps.py
    source_directory: ../src
    arguments: [append, --src, "${inputs.src}", --out, "${outputs.out}"]
    inputs: {src: "${steps.a.outputs.out}"}
    outputs: {out: {}}
  b:
    script: steps.py
    source_directory: ../src
    arguments: [join, --src, "${inputs.src}", --src, "${inputs.after}", --out, "${outputs.out}"]
    inputs: {src: "${steps.a.outputs.out}", after: "${steps.m.outputs.out}"}
    outputs: {out: {}}
  f:
    script: steps.py
    source_directory: ../src
    arguments: [join, --src, "${inputs.src}", --out, "${outputs.out}"]
    inputs: {src: "${params.plain}"}
    outputs: {out: {}}
  g:
    script: steps.py
    source_directory: ../src
    arguments: [join, --src, "${inputs.src}", --out, "${outputs.out}"]
    inputs: {src: "${params.committed}"}
    outputs: {out: {}}
  d:
    script: steps.py
    source_directory: ../src
    arguments: [join, --src, "${inputs.raw}", --out, "${outputs.out}"]
    inputs: {raw: "raw:latest"}
    outputs: {out: {}}
"""

STEPS_PY = """
import argparse
import pathlib

parser = argparse.ArgumentParser()
parser.add_argument("action")
parser.add_argument("--src", type=pathlib.Path, action="append", default=[])
parser.add_argument("--out", type=pathlib.Path, required=True)
args = parser.parse_args()
if args.action == "write":
    (args.out / "value.txt").write_text("20")
elif args.action == "append":
    target = args.src[0] / "value.txt"
    target.chmod(0o644)  # careless, and needless as root: file modes do not stop root
    with open(target, "a") as fh:
        fh.write("+m")
    (args.out / "value.txt").write_text(target.read_text())
else:
    texts = ["".join(p.read_text() for p in sorted(src.rglob("*")) if p.is_file()) for src in args.src]
    (args.out / "value.txt").write_text("|".join(texts))
"""

STEPS = {"a", "m", "b", "f", "g", "d"}


def text(ws, result, step: str) -> str:
    return ws.datastore.read_bytes(f"{result.xcoms[step]['outputs']['out']['key']}/value.txt").decode()


def records(ws, result) -> dict:
    return ws.runs.get_run("input_content", result.run_id)["steps"]


@pytest.mark.timeout(600)
def test_inputs_are_their_bytes(airflow_db, workspace_target, tmp_path, monkeypatch, capfd):
    dags = make_dags_folder(tmp_path / "dags", {"input_content": with_requirements(PIPELINE, workspace_target)},
                            {"src/steps.py": STEPS_PY})
    activate(monkeypatch, dags, workspace_target)
    ws = workspace_target.open()
    ds = ws.datastore
    for rel, data in {"a.csv": b"1,2\n", "sub/b.csv": b"3,4\n"}.items():
        ds.write_bytes(f"data/plain/{rel}", data)
    ws.commit_output(make_tree(tmp_path / "committed", {"c.csv": "5,6\n"}), "data/committed")
    raw = ws.datasets.register("raw", make_tree(tmp_path / "raw", {"data.txt": "hello"}))

    # 1. m appends to its input: its own copy. a's committed output is intact and b reads what a wrote
    first = run(load(dags, "input_content"))
    assert first.state == "success", first.states
    assert first.ran() == STEPS
    a_out = first.xcoms["a"]["outputs"]["out"]
    assert ds.read_bytes(f"{a_out['key']}/value.txt") == b"20"
    assert ws.verify_output(a_out["key"], a_out["digest"])
    assert text(ws, first, "m") == "20+m"
    assert text(ws, first, "b") == "20|20+m"
    assert text(ws, first, "f") == "1,2\n3,4\n"  # a folder without manifest, end to end
    assert records(ws, first)["f"]["inputs"]["src"]["kind"] == "folder"

    # 2. identical rerun: everything reused (a's output still verifies, so b's inputs are the same)
    second = run(load(dags, "input_content"))
    assert second.reused() == dict.fromkeys(STEPS, True), second.reused()

    # 3. both workspace folders changed in place (same sizes): f and g re-run on the real content
    overwrite_in_place(ds, "data/plain/sub/b.csv", b"3,5\n")
    overwrite_in_place(ds, "data/committed/c.csv", b"5,7\n")
    third = run(load(dags, "input_content"))
    assert third.reused() == {"a": True, "m": True, "b": True, "f": False, "g": False, "d": True}
    assert (text(ws, third, "f"), text(ws, third, "g")) == ("1,2\n3,5\n", "5,7\n")
    g = records(ws, third)["g"]
    real = build_manifest(make_tree(tmp_path / "real-c", {"c.csv": "5,7\n"}))["digest"]
    assert g["inputs"]["src"]["digest"] == real and g["inputs"]["src"]["kind"] == "folder"
    assert g["inputs"]["src"]["source"] == "params.committed=data/committed (file c.csv changed since it was committed)"
    assert len(g["rerun_reasons"]) == 1 and g["rerun_reasons"][0].startswith("input src: digest")

    # 4. the registered dataset's data altered in place: d is refused, with the reason
    overwrite_in_place(ds, f"{raw.key}/data.txt", b"hellO")
    capfd.readouterr()
    fourth = run(load(dags, "input_content"))
    log = capfd.readouterr().out
    assert fourth.states["d"] == "failed" and fourth.state == "failed"
    assert {s: fourth.states[s] for s in STEPS - {"d"}} == dict.fromkeys(STEPS - {"d"}, "success")
    assert "dataset 'raw' version 1" in log and "no longer holds what was registered" in log
