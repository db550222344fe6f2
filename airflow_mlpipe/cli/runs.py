"""``mlpipe runs list`` and ``mlpipe runs show``: the run records of the workspace.

A record is written by the step operator (``runs/<pipeline>/<run_id>/run.json`` and one
``steps/<step>.json`` per step): what each step used, whether it was reused and why it re-ran.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import typer

from airflow_mlpipe.cli.common import (
    DEFAULT_CONN_ID,
    ConnIdOpt,
    JsonOpt,
    WorkspaceOpt,
    console,
    did_you_mean,
    epoch,
    esc,
    fail,
    human_bytes,
    list_by_default,
    open_workspace,
    print_json,
    short,
    user_errors,
    when,
)

runs_app = typer.Typer(help="Pipeline runs recorded in the workspace.")


def step_counts(steps: dict[str, dict]) -> dict[str, int]:
    """{"ran", "reused", "failed", "running"} counted over the step records."""
    counts = {"ran": 0, "reused": 0, "failed": 0, "running": 0}
    for record in steps.values():
        status = record.get("status")
        if status == "failed":
            counts["failed"] += 1
        elif status == "running":
            counts["running"] += 1
        elif record.get("reused"):
            counts["reused"] += 1
        elif status == "succeeded":
            counts["ran"] += 1
    return counts


def run_status(steps: dict[str, dict]) -> str:
    counts = step_counts(steps)
    if not steps:
        return "no steps"
    if any(record.get("status") == "damaged" for record in steps.values()):
        return "damaged"
    if counts["failed"]:
        return "failed"
    if counts["running"]:
        return "running"
    return "succeeded"


def run_times(run: dict) -> tuple[float | None, float | None]:
    """(first step start, last step finish) in epoch seconds, else the record's own timestamps."""
    steps = run.get("steps") or {}
    starts = [t for t in (epoch(s.get("started")) for s in steps.values()) if t is not None]
    ends = [t for t in (epoch(s.get("finished")) for s in steps.values()) if t is not None]
    started = min(starts) if starts else epoch(run.get("started") or run.get("created"))
    finished = max(ends) if ends and not any(s.get("status") == "running" for s in steps.values()) else None
    return started, finished


def summarise(run: dict) -> dict[str, Any]:
    if run.get("damaged"):
        return {"pipeline": run.get("pipeline"), "run_id": run.get("run_id"), "started": epoch(run.get("started")),
                "finished": None, "status": "damaged", "steps": 0, "ran": 0, "reused": 0, "failed": 0,
                "running": 0, "damaged": run["damaged"]}
    steps = run.get("steps") or {}
    started, finished = run_times(run)
    return {
        "pipeline": run.get("pipeline"),
        "run_id": run.get("run_id"),
        "started": started,
        "finished": finished,
        "status": run_status(steps),
        "steps": len(steps),
        **step_counts(steps),
    }


def _ordered_steps(steps: dict[str, dict]) -> list[tuple[str, dict]]:
    return sorted(steps.items(), key=lambda item: (epoch(item[1].get("started")) or float("inf"), item[0]))


@runs_app.command("list")
def list_runs(
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="Only this pipeline.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Newest N runs.")] = 20,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """List recorded runs, newest first: status and how many steps ran, were reused or failed."""
    ws = open_workspace(workspace, conn_id)
    with user_errors(f"runs in {ws.uri}"):
        records = ws.runs.list_runs(pipeline, limit=limit)
        if pipeline and not records and pipeline not in ws.runs.pipelines():
            known = ws.runs.pipelines()
            fail(f"no run of pipeline {pipeline!r} is recorded in {ws.uri}{did_you_mean(pipeline, known)}; "
                 f"pipelines with runs: {', '.join(known) or 'none'}")
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(records)))) as pool:
            full = list(pool.map(lambda r: r if r.get("damaged") else ws.runs.get_run(r["pipeline"], r["run_id"]),
                                 records))
    rows = sorted((summarise(run) for run in full), key=lambda r: r["started"] or 0, reverse=True)
    if as_json:
        print_json({"workspace": ws.uri, "runs": rows})
        return
    out = console()
    if not rows:
        out.print(f"no runs recorded in {esc(ws.uri)}" + (f" for pipeline {esc(pipeline)}" if pipeline else ""))
        return
    from rich.table import Table

    table = Table(title=f"runs in {ws.uri}" + (f" (pipeline {pipeline})" if pipeline else ""))
    for column in ("pipeline", "run id", "started", "status", "ran", "reused", "failed"):
        table.add_column(column, overflow="fold", no_wrap=column == "run id",
                         justify="right" if column in ("ran", "reused", "failed") else "left")
    colours = {"succeeded": "green", "failed": "red", "running": "yellow", "damaged": "magenta"}
    for row in rows:
        colour = colours.get(row["status"], "white")
        table.add_row(
            esc(row["pipeline"]), esc(row["run_id"]), when(row["started"]), f"[{colour}]{row['status']}[/]",
            str(row["ran"]), str(row["reused"]), str(row["failed"]),
        )
    out.print(table)
    damaged = [row for row in rows if row.get("damaged")]
    for row in damaged:
        out.print(f"[magenta]damaged record[/] {esc(row['pipeline'])}/{esc(row['run_id'])}: {esc(row['damaged'])}")


def _inputs_text(inputs: dict) -> str:
    lines = []
    for name, inp in sorted((inputs or {}).items()):
        version = f" v{inp['version']}" if inp.get("version") else ""
        lines.append(f"{name} <- {inp.get('source') or inp.get('key')}{version} ({short(inp.get('digest'))})")
    return "\n".join(lines) or "-"


def _outputs_text(outputs: dict) -> str:
    lines = []
    for name, out in sorted((outputs or {}).items()):
        extra = ", ".join(
            part for part in (
                short(out.get("digest")),
                human_bytes(out["size"]) if out.get("size") is not None else "",
                f"{out['files']} files" if out.get("files") is not None else "",
            ) if part
        )
        lines.append(f"{name}: {out.get('uri') or out.get('key')} ({extra})")
    return "\n".join(lines) or "-"


def _metrics_text(metrics: dict) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted((metrics or {}).items())
    ) or "-"


def _git_text(git: Any) -> str:
    if not isinstance(git, dict):
        return "not a git work tree"
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    return f"{short(git.get('commit'))} on {git.get('branch') or 'detached HEAD'}{dirty}"


def _step_table(name: str, record: dict) -> Any:
    from rich.table import Table

    status = record.get("status", "?")
    colour = {"succeeded": "green", "failed": "red", "running": "yellow"}.get(status, "white")
    table = Table(title=f"step {name}: [{colour}]{status}[/]", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    if record.get("reused"):
        origin = record.get("reused_from") or {}
        table.add_row("outcome", esc(f"reused from run {origin.get('run_id', '?')} "
                                     f"(pipeline {origin.get('pipeline', '?')}, step {origin.get('step', name)})"))
    elif status in ("succeeded", "failed", "running"):
        reasons = record.get("rerun_reasons") or []
        table.add_row("outcome", "ran" if status != "running" else "running")
        table.add_row("why it ran", esc("\n".join(f"- {r}" for r in reasons) or "-"))
    table.add_row("cache key", short(record.get("cache_key")))
    snapshot = record.get("snapshot") or {}
    table.add_row("snapshot", esc(f"{short(snapshot.get('sha256'))}  git {_git_text(snapshot.get('git'))}"))
    table.add_row("inputs", esc(_inputs_text(record.get("inputs") or {})))
    table.add_row("outputs", esc(_outputs_text(record.get("outputs") or {})))
    registered = record.get("registered") or {}
    if registered:
        table.add_row("registered", esc(", ".join(f"dataset {k} v{v}" for k, v in sorted(registered.items()))))
    table.add_row("metrics", esc(_metrics_text(record.get("metrics") or {})))
    started, finished = epoch(record.get("started")), epoch(record.get("finished"))
    timing = f"started {when(started)}"
    if finished is not None:
        timing += f", finished {when(finished)}"
        if started is not None:
            timing += f" ({finished - started:.1f}s)"
    table.add_row("timing", timing)
    table.add_row("compute", esc(f"{record.get('compute', '-')}, attempt {record.get('attempt', '-')}"))
    if record.get("error"):
        tail = "\n".join(str(record["error"]).splitlines()[-12:])
        table.add_row("error", f"[red]{esc(tail)}[/]")
    return table


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="The run id (the Airflow DAG run id).")],
    pipeline: Annotated[str | None, typer.Option("--pipeline", "-p", help="The pipeline (faster; "
                                                 "needed if two pipelines have this run id).")] = None,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Show one run: params, git info, and per step what it used, produced and why it ran or was reused."""
    ws = open_workspace(workspace, conn_id)
    with user_errors():
        run = ws.runs.get_run(pipeline, run_id) if pipeline else ws.runs.find_run(run_id)
    summary = summarise(run)
    if as_json:
        print_json({"workspace": ws.uri, "summary": summary, "run": run})
        return
    out = console()
    steps = _ordered_steps(run.get("steps") or {})
    colour = {"succeeded": "green", "failed": "red", "running": "yellow"}.get(summary["status"], "white")
    out.print(f"[bold]run {esc(run.get('run_id'))}[/] of pipeline [bold]{esc(run.get('pipeline'))}[/]: "
              f"[{colour}]{summary['status']}[/] ({summary['ran']} ran, {summary['reused']} reused, "
              f"{summary['failed']} failed)")
    finished = f", finished {when(summary['finished'])}" if summary["finished"] else ""
    out.print(f"started {when(summary['started'])}{finished}; run type {esc(_run_type(run.get('run_type')))}, "
              f"logical date {esc(run.get('logical_date') or '-')}")
    gits = {_git_text((s.get("snapshot") or {}).get("git")) for _, s in steps}
    out.print(f"git: {esc('; '.join(sorted(gits)) if gits else '-')}")

    from rich.table import Table

    params = run.get("params") or {}
    conf = run.get("conf") or {}
    table = Table(title="params", title_justify="left")
    for column in ("param", "value", "from"):
        table.add_column(column, overflow="fold")
    for name in sorted(params):
        table.add_row(esc(name), esc(_value(params[name])), "conf" if name in conf else "default")
    for name in sorted(set(conf) - set(params)):
        table.add_row(esc(name), esc(_value(conf[name])), "conf (undeclared)")
    out.print(table)
    for name, record in steps:
        out.print(_step_table(name, record))


def _run_type(value: Any) -> str:
    """``manual``, ``scheduled``... (older records hold the enum's repr, ``DagRunType.MANUAL``)."""
    text = str(value or "-")
    return text.removeprefix("DagRunType.").lower() if text.startswith("DagRunType.") else text


def _value(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, default=str)


list_by_default(runs_app, list_runs)  # `mlpipe runs` alone lists


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
