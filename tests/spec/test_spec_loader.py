"""Safe YAML loading with line numbers and duplicate-key detection; a timing print for a big file."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import yaml

from airflow_mlpipe.spec import load_pipelines_text
from airflow_mlpipe.spec.loader import _Loader, load_yaml


def generate(n_steps: int = 200, script_dir: str = "src") -> str:
    lines = [
        "pipeline: generated_big",
        "start_date: 2026-01-01",
        "defaults: {compute: local, environment: plain, retries: 1, timeout: 10m}",
        "compute:",
        "  local: {type: local}",
        "environments:",
        "  plain: {python: python3, requirements: [numpy>=1.26]}",
        "params:",
        "  rows: {type: integer, default: 100, minimum: 1}",
        "  data: {type: dataset, default: 'raw:latest'}",
        "steps:",
    ]
    for i in range(n_steps):
        lines += [
            f"  step_{i}:",
            "    script: main.py",
            f"    source_directory: {script_dir}",
            "    description: a generated step",
            f'    arguments: ["--rows", "${{params.rows}}", "--in", "${{inputs.data}}", "--out", "${{outputs.out}}", "--i", {i}]',
            "    inputs:",
            "      data: ${params.data}" if i == 0 else f"      data: ${{steps.step_{i - 1}.outputs.out}}",
            "    outputs:",
            "      out:",
            f"        register_as: ds_{i}"
            if i % 10 == 0
            else "        destination: outputs/{pipeline}/{run_id}/{step}/{output}",
            "    resources: {cpu: 1, memory: 1g}",
        ]
        if i >= 2:
            lines.append(f"    after: [step_{i - 2}]")
    return "\n".join(lines) + "\n"


def test_uses_libyaml_when_available():
    if yaml.__with_libyaml__:
        assert _Loader is yaml.CSafeLoader


def test_lines_of_keys_and_items():
    doc = load_yaml("a: 1\nb:\n  c: x\n  d:\n    - 1\n    - {e: 2}\n")
    assert doc.data == {"a": 1, "b": {"c": "x", "d": [1, {"e": 2}]}}
    assert doc.lines[("a",)] == 1
    assert doc.lines[("b", "c")] == 3
    assert doc.lines[("b", "d", 0)] == 5
    assert doc.lines[("b", "d", 1, "e")] == 6
    assert doc.problems == []


def test_same_values_as_safe_load():
    text = "d: 2026-01-01\nt: 2026-01-01T06:00:00Z\nn: null\nb: true\nf: 1.5\ni: 0x10\ns: '007'\n"
    assert load_yaml(text).data == yaml.safe_load(text)
    assert load_yaml(text).data["d"] == dt.date(2026, 1, 1)


def test_duplicate_keys_are_reported():
    doc = load_yaml("a: 1\nb: 2\na: 3\n")
    assert doc.problems == [(3, ("a",), "duplicate key 'a': already defined on line 1 (keys must be unique)")]


def test_merge_keys_and_anchors():
    doc = load_yaml("base: &b {x: 1, y: 2}\nc:\n  <<: *b\n  y: 3\n")
    assert doc.data["c"] == {"x": 1, "y": 3}
    assert doc.problems == []


def test_unsafe_tags_are_refused():
    doc = load_yaml("a: !!python/object/apply:os.system ['echo hi']\n")
    assert doc.data is None
    assert "unsupported YAML tag" in doc.problems[0][2]
    assert doc.problems[0][0] == 1


def test_syntax_error_has_a_line():
    doc = load_yaml("a: 1\nb: [1, 2\nc: 3\n")
    line, _, message = doc.problems[0]
    assert line is not None and message.startswith("YAML syntax error")


def test_impossible_date():
    doc = load_yaml("a: 1\nd: 2026-02-30\n")
    assert doc.problems[0][0] == 2


def test_timing_of_a_200_step_definition(tmp_path, capsys):
    """Not asserted: speed goals belong to benchmarks. Printed for a quick look (-s)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    text = generate(200)

    def best(fn):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = fn()
            times.append(1000 * (time.perf_counter() - t0))
        return min(times), result

    plain, _ = best(lambda: yaml.load(text, Loader=_Loader))
    lines, _ = best(lambda: load_yaml(text))
    full, spec = best(lambda: load_pipelines_text(text, "big.yaml", base_dir=tmp_path))
    assert len(spec.steps) == 200 and spec.step_order()[0] == "step_0"
    with capsys.disabled():
        print(
            f"\n200 steps ({len(text.splitlines())} lines, best of 3): plain {_Loader.__name__} {plain:.1f} ms, "
            f"with line numbers {lines:.1f} ms, load + full validation {full:.1f} ms"
        )


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level is a list of ``width`` aliases of the level below (width**levels values)."""
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_once():
    """Run in a child process with 2 GiB of address space and a time limit, so a loader that expands
    the aliases fails this test instead of taking the machine down."""
    probe = (
        "import json, resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from airflow_mlpipe.spec.loader import load_yaml\n"
        "text = sys.stdin.read()\n"
        "t0 = time.perf_counter()\n"
        "doc = load_yaml(text)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t0, 'data': doc.data is None, 'problems': doc.problems}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], input=alias_bomb(), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["seconds"] < 5, out  # about a millisecond here; generous for a busy machine
    assert out["data"] is True
    [(line, path, message)] = out["problems"]
    # l0..l4 add 90 + 819 + 7,380 + 66,429 values; l5 (line 6) is the first to pass the limit
    assert line == 6 and path == []
    assert message == (
        "YAML aliases expand the value on this line to 597,871 values, more than the 100,000 that aliases may "
        "add to a definition (a 'billion laughs' alias bomb?): write the values out, or use fewer and smaller aliases"
    )


def test_aliases_up_to_the_limit_load():
    base = "a: &a [" + ", ".join(["x"] * 999) + "]\n"  # 1,000 values
    under = load_yaml(base + "b: [" + ", ".join(["*a"] * 100) + "]\n")  # aliases add 100,000
    assert under.problems == [] and len(under.data["b"]) == 100 and under.data["b"][99] == ["x"] * 999
    over = load_yaml(base + "b: [" + ", ".join(["*a"] * 101) + "]\n")
    assert [(line, msg.split(",", 1)[0]) for line, _, msg in over.problems] == [
        (2, "YAML aliases expand the value on this line to 101")
    ]
    assert over.data is None


def test_aliases_in_every_step_are_fine(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("")
    text = generate(200).replace("    resources: {cpu: 1, memory: 1g}\n", "    resources: &res {cpu: 1, memory: 1g}\n", 1)
    text = text.replace("    resources: {cpu: 1, memory: 1g}\n", "    resources: *res\n")
    assert text.count("*res") == 199
    spec = load_pipelines_text(text, "big.yaml", base_dir=tmp_path, root=tmp_path)
    assert spec.steps["step_199"].resources == spec.steps["step_0"].resources


def test_deep_nesting_is_a_problem_not_a_crash():
    deep = load_yaml("a: " + "{a: " * 900 + "1" + "}" * 900 + "\n")
    [(line, _, message)] = deep.problems
    assert line == 1 and deep.data is None
    assert message.startswith("values nested more than 100 levels deep")
    assert load_yaml("a: " + "[" * 99 + "]" * 99 + "\n").problems == []
