"""Parse time: 200 generated pipeline definitions of 6 steps each, loaded through the factory (one stub
per definition) vs the same 200 DAGs as plain Python files written by `mlpipe compile`, both parsed by
Airflow's DagBag in fresh processes, in the same run.

The factory validates a definition the first time it sees it (cold) and keeps its plan in MLPIPE_CACHE_DIR;
later parses (the dag processor re-parses every file every 30 s, and every task parses its DAG file again)
build from the plan (warm). Both are printed; the RESULT is the warm ratio, the steady state.

    python benchmarks/parse.py [--pipelines 200] [--repeat 3]

Last line: RESULT parse ratio=R goal<=1.3 (R = factory time / plain-Python time).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import textwrap

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFINITION = """\
pipeline: bench_{i:03d}
description: Generated pipeline {i} for the parse benchmark.
version: 1
owner: bench
tags: [bench]
schedule: "@daily"
start_date: 2026-01-01
defaults: {{compute: local, environment: plain, retries: 1, timeout: 10m}}
compute: {{local: {{type: local}}}}
environments: {{plain: {{requirements: []}}}}
params:
  rows: {{type: integer, default: 1000, minimum: 1, description: Rows to use.}}
  rate: {{type: number, default: 0.1, maximum: 1, description: A rate.}}
  data: {{type: dataset, default: "raw_{i:03d}:latest", description: Input data.}}
steps:
  load:
    script: step.py
    source_directory: ../src
    arguments: [--rows, "${{params.rows}}", --out, "${{outputs.table}}"]
    inputs: {{raw: "${{params.data}}"}}
    outputs: {{table: {{}}}}
  clean:
    script: step.py
    source_directory: ../src
    arguments: [--in, "${{inputs.table}}", --out, "${{outputs.cleaned}}"]
    inputs: {{table: "${{steps.load.outputs.table}}"}}
    outputs: {{cleaned: {{}}}}
  features:
    script: step.py
    source_directory: ../src
    arguments: [--in, "${{inputs.table}}", --out, "${{outputs.features}}"]
    inputs: {{table: "${{steps.clean.outputs.cleaned}}"}}
    outputs: {{features: {{}}}}
  train:
    script: step.py
    source_directory: ../src
    arguments: [--in, "${{inputs.features}}", --rate, "${{params.rate}}", --out, "${{outputs.model}}"]
    inputs: {{features: "${{steps.features.outputs.features}}"}}
    outputs: {{model: {{}}}}
  evaluate:
    script: step.py
    source_directory: ../src
    arguments: [--model, "${{inputs.model}}", --data, "${{inputs.features}}", --out, "${{outputs.report}}"]
    inputs: {{model: "${{steps.train.outputs.model}}", features: "${{steps.features.outputs.features}}"}}
    outputs: {{report: {{}}}}
  publish:
    script: step.py
    source_directory: ../src
    arguments: [--report, "${{inputs.report}}", --out, "${{outputs.done}}"]
    inputs: {{report: "${{steps.evaluate.outputs.report}}"}}
    outputs: {{done: {{register_as: "published_{i:03d}"}}}}
"""

STUB = 'from airflow_mlpipe.factory import load_dag\n\ndag = load_dag(__file__, "pipelines/bench_{i:03d}.yaml")\n'

MEASURE = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
    t2 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "parse": t2 - t1, "dags": len(bag.dags),
                      "errors": {k: v[:300] for k, v in bag.import_errors.items()},
                      "tasks": sum(len(d.tasks) for d in bag.dags.values())}))
    """
)


def build(root: pathlib.Path, count: int) -> tuple[pathlib.Path, pathlib.Path]:
    from airflow_mlpipe.factory.compile import compile_source
    from airflow_mlpipe.spec import load_pipeline

    factory_dir, plain_dir = root / "factory", root / "plain"
    for folder in (factory_dir, plain_dir):
        (folder / "src").mkdir(parents=True)
        (folder / "src" / "step.py").write_text("print('step')\n")
        (folder / ".airflowignore").write_text("src/\npipelines/\n")
    (factory_dir / "pipelines").mkdir()
    (plain_dir / "pipelines").mkdir()
    for i in range(count):
        definition = factory_dir / "pipelines" / f"bench_{i:03d}.yaml"
        definition.write_text(DEFINITION.format(i=i))
        (factory_dir / f"bench_{i:03d}.py").write_text(STUB.format(i=i))
        (plain_dir / "pipelines" / definition.name).write_text(definition.read_text())
        spec = load_pipeline(plain_dir / "pipelines" / definition.name)
        (plain_dir / f"bench_{i:03d}.py").write_text(compile_source(spec, plain_dir))
    return factory_dir, plain_dir


def measure(folder: pathlib.Path, env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(folder)], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlpipe-parse-") as tmp:
        root = pathlib.Path(tmp)
        factory_dir, plain_dir = build(root, args.pipelines)
        env = dict(os.environ, AIRFLOW_HOME=str(root / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
                   MLPIPE_CACHE_DIR=str(root / "cache"))
        cold = measure(factory_dir, env)  # validates all 200 and writes their plans
        runs: dict[str, list[dict]] = {"factory": [], "plain": []}
        for _ in range(args.repeat):  # interleaved, so drift hits both sides alike
            runs["plain"].append(measure(plain_dir, env))
            runs["factory"].append(measure(factory_dir, env))
    for name, results in runs.items():
        first = results[0]
        if first["errors"] or first["dags"] != args.pipelines:
            print(f"{name}: {first['dags']} DAGs, import errors: {json.dumps(first['errors'])[:2000]}")
            return 1
    plain = statistics.median(r["parse"] for r in runs["plain"])
    factory = statistics.median(r["parse"] for r in runs["factory"])
    tasks = runs["factory"][0]["tasks"]
    print(f"{args.pipelines} pipelines, {tasks} tasks, DagBag parse time, median of {args.repeat} fresh processes")
    print(f"{'':24}{'median s':>10}{'per DAG ms':>12}{'min s':>9}{'max s':>9}")
    for name, value, key in (("plain Python (compiled)", plain, "plain"), ("factory, warm (plans)", factory, "factory")):
        values = [r["parse"] for r in runs[key]]
        print(f"{name:24}{value:>10.3f}{value / args.pipelines * 1000:>12.2f}{min(values):>9.3f}{max(values):>9.3f}")
    print(f"{'factory, cold (validate)':24}{cold['parse']:>10.3f}{cold['parse'] / args.pipelines * 1000:>12.2f}"
          f"   (first parse of each definition; ratio {cold['parse'] / plain:.3f})")
    print(f"all {args.pipelines} through the factory in {cold['parse']:.2f}s cold, {factory:.2f}s warm (goal: under 5 s)")
    ratio = factory / plain
    print(f"RESULT parse ratio={ratio:.3f} goal<=1.3")
    return 0


if __name__ == "__main__":
    sys.exit(main())
