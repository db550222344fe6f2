"""Safe YAML loading with line numbers and duplicate-key detection; a timing print for a big file."""

from __future__ import annotations

import datetime as dt
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
