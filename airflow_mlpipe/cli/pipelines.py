"""``mlpipe validate``, ``mlpipe schema``, ``mlpipe render``: pipeline definitions, no Airflow needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from airflow_mlpipe.cli.common import console, esc
from airflow_mlpipe.errors import DefinitionError

YAML_SUFFIXES = (".yaml", ".yml")


def collect_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Files named on the command line, plus every *.yaml / *.yml below the folders (sorted,
    hidden directories skipped). Returns ``(files, errors)``."""
    files: list[Path] = []
    errors: list[str] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix in YAML_SUFFIXES
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                errors.append(f"{path}: no *.yaml or *.yml files in this folder")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(f"{path}: no such file or directory")
    return files, errors


def validate(
    paths: Annotated[
        list[Path], typer.Argument(help="Definition files, or folders searched for *.yaml / *.yml.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (machine output).")
    ] = False,
) -> None:
    """Validate pipeline definitions; report every problem of every file. Exit 1 if any is invalid."""
    from airflow_mlpipe.spec import load_pipeline

    files, errors = collect_files(paths)
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            spec = load_pipeline(path)
        except DefinitionError as exc:
            results.append(
                {
                    "file": str(path),
                    "valid": False,
                    "report": str(exc),
                    "problems": [
                        p.to_dict() if hasattr(p, "to_dict") else {"message": str(p)} for p in exc.problems
                    ],
                }
            )
        else:
            results.append(
                {"file": str(path), "valid": True, "pipeline": spec.pipeline, "steps": len(spec.steps)}
            )
    ok = not errors and all(r["valid"] for r in results)
    if as_json:
        doc = {"valid": ok, "files": results, "errors": errors}
        typer.echo(json.dumps(doc, indent=2, default=str))
        raise typer.Exit(0 if ok else 1)
    out, err = console(), console(stderr=True)
    for message in errors:
        err.print(f"[red]error[/red]  {esc(message)}")
    for r in results:
        if r["valid"]:
            out.print(
                f"[green]ok[/green]  {esc(r['file'])}  (pipeline {esc(r['pipeline'])}, {r['steps']} steps)"
            )
        else:
            head, _, rest = r["report"].partition("\n")
            out.print(f"[red]{esc(head)}[/red]")
            if rest:
                out.print(esc(rest))
    bad = sum(1 for r in results if not r["valid"])
    if len(results) > 1 or bad:
        summary = f"{len(results) - bad} valid, {bad} invalid"
        out.print(summary if ok else f"[red]{summary}[/red]")
    raise typer.Exit(0 if ok else 1)


def schema(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the schema to this file.")
    ] = None,
) -> None:
    """Print the JSON Schema of the pipeline definition format (for editors and CI)."""
    from airflow_mlpipe.spec import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


def _load_or_exit(path: Path) -> Any:
    """The validated definition at ``path``; on a problem, print the whole report and exit 1."""
    from airflow_mlpipe.spec import load_pipeline

    try:
        return load_pipeline(path)
    except DefinitionError as exc:
        console(stderr=True).print(esc(str(exc)))
        raise typer.Exit(1) from None


def render(
    path: Annotated[Path, typer.Argument(help="A pipeline definition file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the graph as JSON.")] = False,
) -> None:
    """Show the step graph: each step in run order with its compute, inputs, outputs and upstream steps."""
    spec = _load_or_exit(path)
    graph = describe_graph(spec)
    if as_json:
        typer.echo(json.dumps(graph, indent=2, default=str))
        return
    from rich.table import Table

    table = Table(
        title=f"pipeline {spec.pipeline} (version {spec.version}): {len(spec.steps)} steps", show_lines=True
    )
    for column in ("#", "step", "compute / environment", "inputs", "outputs", "upstream"):
        table.add_column(column, overflow="fold")
    for i, name in enumerate(graph["order"], start=1):
        step = graph["steps"][name]
        inputs = "\n".join(f"{k} <- {v['source']}" for k, v in step["inputs"].items()) or "-"
        outputs = (
            "\n".join(
                f"{k}" + (f" -> dataset {v['register_as']}" if v["register_as"] else "")
                for k, v in step["outputs"].items()
            )
            or "-"
        )
        where = " / ".join(x for x in (step["compute"], step["environment"]) if x) or "-"
        kind = "" if step["type"] == "python" else f" ({step['type']})"
        table.add_row(
            str(i),
            esc(name + kind),
            esc(where),
            esc(inputs),
            esc(outputs),
            esc(", ".join(step["upstream"]) or "-"),
        )
    console().print(table)


def compile_(
    path: Annotated[Path, typer.Argument(help="A pipeline definition file.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the DAG file here (default: print it).")
    ] = None,
) -> None:
    """Write the plain-Python DAG file equivalent to what the factory builds (for static DAGs in review)."""
    spec = _load_or_exit(path)
    from airflow_mlpipe.factory.compile import compile_source

    source = compile_source(spec, output.resolve().parent if output else Path.cwd())
    if output is None:
        sys.stdout.write(source)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(source, encoding="utf-8")
        typer.echo(f"wrote {output} (DAG {spec.pipeline}, {len(spec.steps)} steps)", err=True)


def describe_graph(spec: Any) -> dict[str, Any]:
    """The data behind ``mlpipe render`` (also its ``--json`` output)."""
    steps: dict[str, Any] = {}
    for name in spec.step_order():
        step = spec.steps[name]
        compute = environment = None
        if step.needs_compute:
            compute = spec.resolved_compute(name)[0]
            environment = spec.resolved_environment(name)[0]
        inputs = {}
        for in_name, ref in spec.input_refs(name).items():
            if ref.kind == "step_output":
                source = f"step {ref.step}.{ref.name}"
            elif ref.kind == "param":
                source = f"param {ref.name}"
            elif ref.kind == "model":
                source = f"model {ref.name}" + (f"@{ref.alias}" if ref.alias else f"/{ref.version}")
            else:
                source = f"dataset {ref.name}" + (f":{ref.version}" if ref.version is not None else "")
            inputs[in_name] = {"kind": ref.kind, "source": source, "ref": ref.raw}
        steps[name] = {
            "type": step.type,
            "compute": compute,
            "environment": environment,
            "inputs": inputs,
            "outputs": {
                k: {"destination": o.destination, "register_as": o.register_as}
                for k, o in step.outputs.items()
            },
            "upstream": spec.upstream(name),
            "params": spec.params_used(name),
        }
    return {"pipeline": spec.pipeline, "version": spec.version, "order": list(steps), "steps": steps}


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the ``mlpipe`` app."""
    app.command("validate")(validate)
    app.command("schema")(schema)
    app.command("render")(render)
    app.command("compile")(compile_)
