"""Step reuse through Airflow (DESIGN.md section 5), on a local and on an S3 (moto) workspace.

One pipeline, a chain ``a -> b -> c`` and an independent step ``d`` reading a registered dataset
(``raw:latest``), each step in its own source directory. It runs under ``dag.test()`` (real Airflow, real
step subprocesses, real workspace) several times in a row, changing one thing between runs, and checks
which steps ran and which were reused (XCom ``reused``, the step record, the reasons given):

1. first run: all four ran;
2. identical rerun: all reused, each pointing at run 1;
3. one byte of b.py that changes b's output: b and its dependent c re-run, a and d reused, and the
   reasons (step record and task log) name ``b.py``;
4. a comment-only byte of b.py: b re-runs, but its output has the same digest, so c is reused;
5. a new version of the dataset ``raw`` (one byte differs): only d (its consumer) re-runs;
6. a param d uses (``label``): d re-runs; a, b, c (which do not use it) reused;
7. a param a uses (``scale``): a re-runs and, as its output changes, b and c; d reused;
8. ``regenerate_outputs: true``: all re-run;
9. the files of c's cached output deleted: c recomputes (with the reason), the others reused;
10. one byte of c's cached output changed in place (same size, manifest untouched): c recomputes, and says
    which file changed.
"""

from __future__ import annotations

import pathlib

import pytest

from tests.operators.kit import activate, edit_source, load, make_dags_folder, run, with_requirements
from tests.workspace.conftest import overwrite_in_place

PIPELINE = """
pipeline: reuse_chain
start_date: 2026-01-01
schedule: null
defaults: {compute: local, environment: plain, retries: 0}
compute:
  local: {type: local}
environments:
  plain: {python: python3, requirements: REQUIREMENTS}
params:
  scale: {type: integer, default: 2, description: used by a only}
  label: {type: string, default: x, description: used by d only}
steps:
  a:
    script: a.py
    source_directory: ../src/a
    arguments: [--scale, "${params.scale}", --out, "${outputs.out}"]
    outputs: {out: {}}
  b:
    script: b.py
    source_directory: ../src/b
    arguments: [--src, "${inputs.src}", --out, "${outputs.out}"]
    inputs: {src: "${steps.a.outputs.out}"}
    outputs: {out: {}}
  c:
    script: c.py
    source_directory: ../src/c
    arguments: [--src, "${inputs.src}", --out, "${outputs.out}"]
    inputs: {src: "${steps.b.outputs.out}"}
    outputs: {out: {}}
  d:
    script: d.py
    source_directory: ../src/d
    arguments: [--raw, "${inputs.raw}", --label, "${params.label}", --out, "${outputs.out}"]
    inputs: {raw: "raw:latest"}
    outputs: {out: {}}
"""

HEAD = """
import argparse
import pathlib

from airflow_mlpipe.runtime import context

parser = argparse.ArgumentParser()
parser.add_argument("--out", type=pathlib.Path, required=True)
"""

SOURCES = {
    "src/a/a.py": HEAD + """
parser.add_argument("--scale", type=int, required=True)
args = parser.parse_args()
(args.out / "value.txt").write_text(str(args.scale * 10))
context.log_metric("value", args.scale * 10)
""",
    "src/b/b.py": HEAD + """
TAG = "b1"  # comment
parser.add_argument("--src", type=pathlib.Path, required=True)
args = parser.parse_args()
(args.out / "value.txt").write_text((args.src / "value.txt").read_text() + "+" + TAG)
""",
    "src/c/c.py": HEAD + """
parser.add_argument("--src", type=pathlib.Path, required=True)
args = parser.parse_args()
(args.out / "value.txt").write_text("c(" + (args.src / "value.txt").read_text() + ")")
""",
    "src/d/d.py": HEAD + """
parser.add_argument("--raw", type=pathlib.Path, required=True)
parser.add_argument("--label", required=True)
args = parser.parse_args()
text = "".join(p.read_text() for p in sorted(args.raw.rglob("*.txt")))
(args.out / "value.txt").write_text(args.label + ":" + text)
""",
}

STEPS = {"a", "b", "c", "d"}


def output_text(ws, result, step: str) -> str:
    key = result.xcoms[step]["outputs"]["out"]["key"]
    manifest = ws.read_manifest(key)
    assert manifest is not None and set(manifest["files"]) == {"value.txt"}, manifest
    return ws.datastore.read_bytes(f"{key}/value.txt").decode()


def register_raw(ws, tmp_path: pathlib.Path, text: str) -> int:
    folder = tmp_path / f"raw-{text}"
    folder.mkdir()
    (folder / "data.txt").write_text(text)
    return ws.datasets.register("raw", folder).version


def steps_of(ws, result) -> dict:
    return ws.runs.get_run("reuse_chain", result.run_id)["steps"]


@pytest.mark.timeout(600)
def test_reuse_rules_through_airflow(airflow_db, workspace_target, tmp_path, monkeypatch, capfd):
    dags = make_dags_folder(tmp_path / "dags", {"reuse_chain": with_requirements(PIPELINE, workspace_target)}, SOURCES)
    activate(monkeypatch, dags, workspace_target)
    ws = workspace_target.open()
    assert register_raw(ws, tmp_path, "hello") == 1

    def dag():
        # a fresh DAG object per run, as each task process parses its own: Airflow 3.3's in-process
        # dag.test() resolves dag_run.conf into the task's Param objects in place, so the conf of one
        # dag.test() leaks into the next run of the same DAG object
        return load(dags, "reuse_chain")

    # 1. first run: everything runs
    first = run(dag())
    assert first.state == "success", first.states
    assert first.ran() == STEPS
    assert {output_text(ws, first, s) for s in STEPS} == {"20", "20+b1", "c(20+b1)", "x:hello"}
    record = steps_of(ws, first)
    assert {s: record[s]["reused"] for s in STEPS} == dict.fromkeys(STEPS, False)
    assert record["a"]["rerun_reasons"] == ["no previous run of this step"]

    # 2. identical rerun: everything reused, from run 1, with run 1's outputs
    second = run(dag())
    assert second.state == "success"
    assert second.reused() == dict.fromkeys(STEPS, True)
    record = steps_of(ws, second)
    for step in STEPS:
        assert record[step]["reused"] is True and record[step]["status"] == "succeeded"
        assert record[step]["reused_from"]["run_id"] == first.run_id
        assert second.xcoms[step]["outputs"] == first.xcoms[step]["outputs"]
        assert second.xcoms[step]["reused_from"]["run_id"] == first.run_id
    assert second.xcoms["a"]["metrics"] == {"value": 20}

    # 3. one byte of b.py that changes its output: b and its dependent c re-run, nothing else
    edit_source(dags, "src/b/b.py", 'TAG = "b1"', 'TAG = "b2"')
    capfd.readouterr()
    third = run(dag())
    log = capfd.readouterr().out
    assert third.ran() == {"b", "c"}, third.reused()
    assert third.reused() == {"a": True, "b": False, "c": False, "d": True}
    assert output_text(ws, third, "c") == "c(20+b2)"
    record = steps_of(ws, third)
    assert record["b"]["rerun_reasons"] == ["script b.py changed"]
    assert any(r.startswith("input src: digest") for r in record["c"]["rerun_reasons"]), record["c"]
    assert "running step b: script b.py changed" in log

    # 4. a comment-only byte: b re-runs, produces the same digest, so c is reused
    edit_source(dags, "src/b/b.py", "# comment", "# commenT")
    fourth = run(dag())
    assert fourth.reused() == {"a": True, "b": False, "c": True, "d": True}
    assert fourth.xcoms["b"]["outputs"]["out"]["digest"] == third.xcoms["b"]["outputs"]["out"]["digest"]
    assert fourth.xcoms["c"]["reused_from"]["run_id"] == third.run_id

    # 5. a new version of the input dataset (one byte differs): its consumer d re-runs
    assert register_raw(ws, tmp_path, "hellO") == 2
    fifth = run(dag())
    assert fifth.reused() == {"a": True, "b": True, "c": True, "d": False}
    assert output_text(ws, fifth, "d") == "x:hellO"
    reasons = steps_of(ws, fifth)["d"]["rerun_reasons"]
    assert len(reasons) == 1 and reasons[0].startswith("input raw: digest"), reasons
    assert steps_of(ws, fifth)["d"]["inputs"]["raw"]["version"] == 2

    # 6. a param d uses re-runs d; a, b, c do not use it and are reused
    sixth = run(dag(), {"label": "y"})
    assert sixth.reused() == {"a": True, "b": True, "c": True, "d": False}
    assert output_text(ws, sixth, "d") == "y:hellO"
    # the resolved arguments are part of the key too, so both are named
    assert "param label: 'x' -> 'y'" in steps_of(ws, sixth)["d"]["rerun_reasons"]

    # 7. a param a uses: a re-runs and its dependents with it (the output changed); d reused
    seventh = run(dag(), {"scale": 3})
    assert seventh.reused() == {"a": False, "b": False, "c": False, "d": True}
    assert output_text(ws, seventh, "c") == "c(30+b2)"
    assert "param scale: 2 -> 3" in steps_of(ws, seventh)["a"]["rerun_reasons"]

    # 8. regenerate_outputs: everything re-runs, whatever the cache holds
    eighth = run(dag(), {"regenerate_outputs": True})
    assert eighth.reused() == dict.fromkeys(STEPS, False)
    record = steps_of(ws, eighth)
    assert {s: record[s]["rerun_reasons"] for s in STEPS} == dict.fromkeys(STEPS, ["regenerate_outputs requested"])

    # 9. the cached output of c loses its files: c recomputes, the others are reused
    c_key = eighth.xcoms["c"]["outputs"]["out"]["key"]
    removed = [obj.key for obj in ws.datastore.list(c_key + "/")]
    assert f"{c_key}/_manifest.json" in removed
    for key in removed:
        ws.datastore.delete(key)
    ninth = run(dag())
    assert ninth.reused() == {"a": True, "b": True, "c": False, "d": True}
    assert steps_of(ws, ninth)["c"]["rerun_reasons"] == [f"output out: it was deleted (no _manifest.json at {ws.datastore.uri_for(c_key)})"]
    assert output_text(ws, ninth, "c") == "c(20+b2)"
    assert ninth.xcoms["c"]["outputs"]["out"]["key"] != c_key

    # 10. c's cached output changed in place (same size, its manifest untouched): never reused as it is
    c_key = ninth.xcoms["c"]["outputs"]["out"]["key"]
    overwrite_in_place(ws.datastore, f"{c_key}/value.txt", b"c(20+b3)")
    tenth = run(dag())
    assert tenth.reused() == {"a": True, "b": True, "c": False, "d": True}
    assert steps_of(ws, tenth)["c"]["rerun_reasons"] == ["output out: file value.txt changed since it was committed"]
    assert output_text(ws, tenth, "c") == "c(20+b2)"
