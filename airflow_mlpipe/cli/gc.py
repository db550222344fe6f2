"""``mlpipe gc``: delete old, unreferenced intermediate step outputs (dry run unless ``--yes``).

``workspace/gc.py`` decides: registered dataset and model versions are never touched, and an output that
a live cache entry or a registered version references is kept.
"""

from __future__ import annotations

from typing import Annotated

import typer

from airflow_mlpipe.cli.common import (
    DEFAULT_CONN_ID,
    ConnIdOpt,
    JsonOpt,
    WorkspaceOpt,
    console,
    esc,
    human_bytes,
    open_workspace,
    print_json,
    user_errors,
)


def gc(
    older_than: Annotated[float, typer.Option("--older-than", min=0, help="Only outputs older than DAYS.",
                                              metavar="DAYS")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete for real (default: only show what would go).")]
    = False,
    show_kept: Annotated[bool, typer.Option("--show-kept", help="Also list the outputs kept, with why.")] = False,
    uploads_older_than: Annotated[float, typer.Option(
        "--uploads-older-than", min=0, metavar="HOURS",
        help="S3: abort multipart uploads open for longer than HOURS (a killed writer leaves them).")] = 24.0,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Collect intermediate step outputs older than DAYS that no cache entry or registered version uses."""
    ws = open_workspace(workspace, conn_id)
    with user_errors(f"gc of {ws.uri}"):
        report = ws.gc(older_than, dry_run=not yes, stale_upload_hours=uploads_older_than)
    if as_json:
        print_json({"workspace": ws.uri, "dry_run": report.dry_run, "older_than_days": older_than,
                    "bytes": report.bytes, "collected": report.collected, "kept": report.kept,
                    "cache_entries_removed": report.entries_removed, "stale_uploads": report.stale_uploads})
        return
    out = console()
    verb = "would delete" if report.dry_run else "deleted"
    if report.collected:
        from rich.table import Table

        table = Table(title=f"{verb}: outputs older than {older_than:g} days in {ws.uri}")
        for column in ("output", "files", "size", "age (days)"):
            table.add_column(column, overflow="fold", justify="left" if column == "output" else "right")
        for item in report.collected:
            table.add_row(esc(item["prefix"]), str(item["files"]), human_bytes(item["bytes"]),
                          f"{item['age_days']:.1f}")
        out.print(table)
    if show_kept and report.kept:
        from rich.table import Table

        kept = Table(title="kept")
        kept.add_column("output", overflow="fold")
        kept.add_column("why", overflow="fold")
        for item in report.kept:
            kept.add_row(esc(item["prefix"]), esc(item["reason"]))
        out.print(kept)
    summary = (f"{verb} {len(report.collected)} output(s), {human_bytes(report.bytes)} "
               f"({report.bytes} bytes); kept {len(report.kept)}")
    if report.entries_removed:
        summary += f"; removed {len(report.entries_removed)} superseded cache entries"
    if report.stale_uploads:
        summary += (f"; {'would abort' if report.dry_run else 'aborted'} {len(report.stale_uploads)} multipart "
                    f"upload(s) open for more than {uploads_older_than:g} hours")
    out.print(summary)
    if report.dry_run and report.collected:
        out.print("dry run: nothing was deleted; add --yes to delete these")


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)
