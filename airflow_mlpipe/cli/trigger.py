"""``mlpipe trigger``: run a pipeline (or a pipeline endpoint) on a running Airflow through its REST API.

``--param NAME=VALUE`` values are typed by the pipeline's declared params (``cli/params.py``); an unknown
name is refused before anything runs. With ``--wait``, a live status line, then one row per step (state,
ran or reused, seconds, metrics) read from the run itself: task instances and the steps' XComs. A failed
run names its failing steps and shows the tail of their logs.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from airflow_mlpipe.cli.common import (
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    JsonOpt,
    PasswordStdinOpt,
    UrlOpt,
    airflow_client,
    console,
    did_you_mean,
    esc,
    fail,
    print_json,
    user_errors,
    warn,
)
from airflow_mlpipe.cli.params import ConfRefused, build_conf, declared_params
from airflow_mlpipe.spec.values import parse_int

LOG_TAIL_LINES = 30


# ------------------------------------------------------------------------------------------- summary


def first_line(detail: Any) -> str:
    """The first line of Airflow's reason (a Param validation error goes on with the whole schema)."""
    text = detail if isinstance(detail, str) else str(detail)
    return text.strip().splitlines()[0] if text.strip() else text


def _noise(line: str) -> bool:
    """Airflow's log-folding markers (``::group::NAME`` / ``::endgroup::``) carry no information."""
    return line.startswith(("::group::", "::endgroup::"))


def _log_lines(events: list[Any]) -> list[str]:
    """Airflow's structured log events -> text lines (exceptions as ``Type: message`` lines)."""
    return [line for line in _raw_log_lines(events) if not _noise(line)]


def _raw_log_lines(events: list[Any]) -> list[str]:
    lines: list[str] = []
    for item in events:
        if not isinstance(item, dict):
            lines.extend(str(item).splitlines() or [""])
            continue
        event = str(item.get("event", ""))
        level = str(item.get("level") or "").upper()
        prefix = f"{level}: " if level in ("ERROR", "CRITICAL", "WARNING") else ""
        lines.extend(f"{prefix}{line}" for line in (event.splitlines() or [""]))
        for detail in item.get("error_detail") or []:
            if isinstance(detail, dict):
                text = f"{detail.get('exc_type', 'Error')}: {detail.get('exc_value', '')}"
                lines.extend(text.splitlines())
    return lines


def log_tail(client: Any, dag_id: str, run_id: str, ti: dict[str, Any], n: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``n`` lines of the task instance's last try (a one-line note if the log is unavailable)."""
    from airflow_mlpipe.client import AirflowApiError

    try_number = int(ti.get("try_number") or 0)
    if try_number < 1:
        return ["(the task never started: no log)"]
    try:
        events = client.task_log_events(dag_id, run_id, ti["task_id"], try_number, ti.get("map_index", -1))
    except AirflowApiError as exc:
        return [f"(log unavailable: {exc})"]
    return _log_lines(events)[-n:]


def run_summary(client: Any, dag_id: str, run: dict[str, Any], tail_lines: int = LOG_TAIL_LINES) -> dict[str, Any]:
    """Per-step outcome, metrics and outputs of a run, read from its task instances and their XComs;
    failed steps with the tail of their log."""
    run_id = run["dag_run_id"]
    tis = sorted(client.task_instances(dag_id, run_id), key=lambda ti: (ti.get("start_date") or "~", ti["task_id"]))
    steps: list[dict[str, Any]] = []
    for ti in tis:
        map_index = ti.get("map_index", -1)
        name = ti["task_id"] + (f"[{map_index}]" if map_index is not None and map_index >= 0 else "")
        value = client.xcom(dag_id, run_id, ti["task_id"], map_index=map_index)
        value = value if isinstance(value, dict) else {}
        step = {
            "step": name,
            "task_id": ti["task_id"],
            "map_index": map_index,
            "state": ti.get("state"),
            "outcome": "reused" if value.get("reused") else ("ran" if value else "-"),
            "seconds": ti.get("duration"),
            "try_number": ti.get("try_number"),
            "metrics": value.get("metrics") or {},
            "outputs": {k: v.get("uri") for k, v in (value.get("outputs") or {}).items() if isinstance(v, dict)},
            "registered": value.get("registered") or {},
            "reused_from": value.get("reused_from"),
            "model": value.get("model"),
        }
        if ti.get("state") == "failed":
            step["log_tail"] = log_tail(client, dag_id, run_id, ti, tail_lines)
        steps.append(step)
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "state": run.get("state"),
        "conf": run.get("conf"),
        "steps": steps,
        "failed_steps": [s["step"] for s in steps if s["state"] == "failed"],
    }


def render_summary(summary: dict[str, Any], out: Any = None) -> None:
    from rich.table import Table

    out = out or console()
    colour = {"success": "green", "failed": "red"}.get(summary["state"], "yellow")
    table = Table(title=f"{summary['dag_id']}: run {summary['run_id']} [{colour}]{summary['state']}[/]")
    for col in ("step", "state", "outcome", "seconds", "metrics"):
        table.add_column(col, overflow="fold")
    outputs: list[str] = []
    for step in summary["steps"]:
        metrics = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in sorted(step["metrics"].items()))
        state = step["state"] or "-"
        state_cell = f"[red]{state}[/]" if state == "failed" else esc(state)
        table.add_row(esc(step["step"]), state_cell, step["outcome"], f"{step['seconds'] or 0:.1f}", esc(metrics))
        name = step["step"]
        for out_name, uri in step["outputs"].items():
            outputs.append(f"  {name}.{out_name}: {uri}")
        for dataset, version in step["registered"].items():
            outputs.append(f"  {name} registered dataset {dataset} version {version}")
        model = step.get("model")
        if isinstance(model, dict):
            line = f"  {name}: model {model.get('name')} version {model.get('version')}"
            if model.get("decision"):
                line += f" {model['decision']}"
                if model.get("alias_holder") is not None:
                    line += f"; {model.get('alias')} is version {model['alias_holder']}"
            outputs.append(line)
    out.print(table)
    if outputs:
        out.print("Outputs:")
        for line in outputs:
            out.print(esc(line), soft_wrap=True, highlight=False)
    for step in summary["steps"]:
        if step["state"] == "failed":
            tail = step.get("log_tail") or []
            out.print(f"[red]step {esc(step['step'])} failed[/] (try {step.get('try_number')}); "
                      f"last {len(tail)} log lines:")
            for line in tail:
                out.print(f"  {esc(line)}", soft_wrap=True, highlight=False)


def print_summary(client: Any, dag_id: str, run: dict[str, Any], out: Any = None) -> dict[str, Any]:
    """Read the run's outcome (``run_summary``) and print it; returns the summary (used by scripts/demo.py)."""
    summary = run_summary(client, dag_id, run)
    render_summary(summary, out)
    return summary


# ------------------------------------------------------------------------------------------- command


def _status_text(client: Any, dag_id: str, run: dict[str, Any], started: float) -> str:
    from airflow_mlpipe.client import AirflowApiError

    text = f"run {run['dag_run_id']} is {run['state']} ({time.monotonic() - started:.0f}s)"
    try:
        tis = client.task_instances(dag_id, run["dag_run_id"])
    except AirflowApiError:
        return text
    done = sum(1 for ti in tis if ti.get("state") in ("success", "failed", "skipped", "upstream_failed"))
    running = [ti["task_id"] for ti in tis if ti.get("state") == "running"]
    text += f": {done}/{len(tis)} steps done"
    if running:
        text += f", running {', '.join(running)}"
    return text


class _PausedCheck:
    """While the run is queued, look (every ``every`` seconds) whether its DAG got paused meanwhile: then
    the run would never start, and ``--wait`` stops with the fix instead of waiting forever."""

    def __init__(self, client: Any, dag_id: str, run_id: str, every: float = 15.0) -> None:
        self.client, self.dag_id, self.run_id, self.every = client, dag_id, run_id, every
        self.last = time.monotonic()

    def __call__(self, run: dict[str, Any]) -> None:
        if run.get("state") != "queued" or time.monotonic() - self.last < self.every:
            return
        self.last = time.monotonic()
        if self.client.get_dag(self.dag_id).get("is_paused"):
            fail(f"{self.dag_id} is paused, so run {self.run_id} stays queued; unpause it (UI, `mlpipe trigger "
                 f"{self.dag_id} --unpause`, or PATCH /api/v2/dags/{self.dag_id} with {{\"is_paused\": false}}) and "
                 "it starts", EXIT_UNAVAILABLE)


def _dag_details(client: Any, dag_id: str) -> dict[str, Any]:
    from airflow_mlpipe.client import AirflowApiError

    try:
        return client.get_dag_details(dag_id)
    except AirflowApiError as exc:
        if exc.status != 404:
            raise
        try:
            known = client.dag_ids()
        except AirflowApiError:
            known = []
        fail(f"Airflow at {client.url} has no pipeline {dag_id!r}{did_you_mean(dag_id, known)}; known DAGs: "
             f"{', '.join(sorted(known)[:30]) or 'none'} (a new definition appears after the DAG processor parses it)")


def _version(text: str | None) -> int | None:
    """``--version N``: a published version number, in ASCII digits (click's int() takes ``1_0`` and ``١``)."""
    if text is None:
        return None
    try:
        number = parse_int(text)
    except ValueError:
        number = 0
    if number < 1:
        fail(f"--version {text!r}: expected a version number like 2. Nothing was triggered.", EXIT_REFUSED)
    return number


def trigger(
    target: Annotated[str, typer.Argument(metavar="PIPELINE_OR_ENDPOINT", help="The DAG id of a pipeline or endpoint.")],
    param: Annotated[list[str] | None, typer.Option("--param", "-p", metavar="NAME=VALUE",
                                                    help="A param value, typed by the pipeline's params. Repeatable.")] = None,
    conf_json: Annotated[str | None, typer.Option("--conf-json", metavar="JSON",
                                                  help="A JSON object merged into the conf (--param wins).")] = None,
    version: Annotated[str | None, typer.Option("--version", metavar="N",
                                                help="Endpoints: run this published version.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run; print each step's outcome.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait with --wait.")] = 3600,
    unpause: Annotated[bool, typer.Option("--unpause", help="Unpause the DAG first if it is paused.")] = False,
    url: UrlOpt = None,
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Trigger a pipeline run on a running Airflow (REST API).

    Exit 0 on success, 1 if the run failed, 2 if refused (unknown pipeline or param, a value Airflow rejects), 3 if Airflow cannot be used."""
    from airflow_mlpipe.client import AirflowApiError

    client = airflow_client(url, password_stdin)
    err = console(stderr=True)
    with client, user_errors(f"Airflow at {client.url}"):
        details = _dag_details(client, target)
        try:
            conf = build_conf(declared_params(details), param, conf_json, _version(version), dag_id=target)
        except ConfRefused as exc:
            fail(f"{exc}. Nothing was triggered.", EXIT_REFUSED)
        if wait and details.get("is_paused") and not unpause:
            fail(f"{target} is paused: its run would stay queued and --wait would wait forever. Trigger with "
                 f"--unpause (or unpause it in the UI, or PATCH /api/v2/dags/{target} with "
                 '{"is_paused": false}). Nothing was triggered.', EXIT_REFUSED)
        try:
            run = client.trigger(target, conf)
        except AirflowApiError as exc:
            if exc.status == 400:
                reason = first_line(exc.detail).rstrip(".")
                if "Nothing was triggered" not in reason:  # the plugin's refusals say it already
                    reason += ". Nothing was triggered; fix the value(s) and trigger again"
                fail(f"Airflow refused the conf of {target}: {reason}.", EXIT_REFUSED)
            raise
        if details.get("is_paused"):  # after the trigger: a refused conf leaves the DAG as it was
            if unpause:
                client.set_paused(target, False)
                err.print(f"unpaused {esc(target)}")
            else:
                warn(f"{target} is paused: the run stays queued until it is unpaused "
                     "(in the UI, or trigger with --unpause)")
        run_id = run["dag_run_id"]
        if not as_json:
            console().print(f"triggered [bold]{esc(target)}[/]: run [bold]{esc(run_id)}[/]")
        if not wait:
            if as_json:
                print_json({"dag_id": target, "run_id": run_id, "state": run.get("state"), "conf": conf})
            return
        started = time.monotonic()
        paused_check = _PausedCheck(client, target, run_id)
        try:
            with err.status(f"run {run_id} is {run.get('state')}") as status:
                def on_poll(r: dict[str, Any]) -> None:
                    paused_check(r)
                    status.update(_status_text(client, target, r, started))

                run = client.wait(target, run_id, timeout=timeout, interval=1.0, on_poll=on_poll)
        except AirflowApiError as exc:
            if exc.status is None and time.monotonic() - started >= timeout:
                from airflow_mlpipe.client import url_segment

                fail(f"{exc}; it keeps running in Airflow: follow it at "
                     f"{client.url}/dags/{url_segment(target)}/runs/{url_segment(run_id)} "
                     f"or with `mlpipe runs show {run_id}`", EXIT_UNAVAILABLE)
            raise
        summary = run_summary(client, target, run)
    if as_json:
        print_json(summary)
    else:
        render_summary(summary)
        if summary["state"] != "success":
            failed = ", ".join(summary["failed_steps"]) or "no step failed (see the run in the UI)"
            console(stderr=True).print(f"[red]run {esc(run_id)} {esc(summary['state'])}[/]: failing step(s): "
                                       f"{esc(failed)}")
    if summary["state"] != "success":
        raise typer.Exit(EXIT_FAILED)


def register(app: typer.Typer) -> None:
    app.command("trigger")(trigger)
