"""``mlpipe gc``: delete old, unreferenced intermediate step outputs (dry run unless ``--yes``).

``workspace/gc.py`` decides: registered dataset and model versions are never touched, and an output that
a live cache entry, a registered version or an alias history references, or that a running run owns, is
kept. The report is a summary (counts and bytes per kind, the 10 largest outputs, the time taken);
``--json`` has every output collected and kept.
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
    """Collect intermediate step outputs older than DAYS that no cache entry, registered version, alias history
    or running run uses. Prints counts and bytes per kind and the 10 largest outputs; --json lists them all."""
    ws = open_workspace(workspace, conn_id)
    with user_errors(f"gc of {ws.uri}"):
        report = ws.gc(older_than, dry_run=not yes, stale_upload_hours=uploads_older_than)
    if as_json:
        print_json({"workspace": ws.uri, **report.to_dict(), "older_than_days": older_than})
        return
    from rich.table import Table

    out = console()
    verb = "would delete" if report.dry_run else "deleted"
    kinds = Table(title=f"gc of {ws.uri}: outputs older than {older_than:g} days "
                        f"({'dry run' if report.dry_run else 'deleted'}, {report.seconds:.2f} s)")
    for column in ("kind", "items", "size"):
        kinds.add_column(column, justify="left" if column == "kind" else "right")
    for row in report.by_kind():
        size = "" if row["bytes"] is None else human_bytes(row["bytes"])
        kinds.add_row(esc(row["kind"]), str(row["items"]), size)
    out.print(kinds)
    if report.collected:
        largest = report.largest(10)
        title = f"{verb}: the {len(largest)} largest" if len(report.collected) > len(largest) else verb
        table = Table(title=title)
        for column in ("output", "files", "size", "age (days)"):
            table.add_column(column, overflow="fold", justify="left" if column == "output" else "right")
        for item in largest:
            table.add_row(esc(item["prefix"]), str(item["files"]), human_bytes(item["bytes"]),
                          f"{item['age_days']:.1f}")
        out.print(table)
    if show_kept and report.kept:
        kept = Table(title="kept")
        kept.add_column("output", overflow="fold")
        kept.add_column("why", overflow="fold")
        for item in report.kept:
            kept.add_row(esc(item["prefix"]), esc(item["reason"]))
        out.print(kept)
    summary = (f"{verb} {len(report.collected)} output(s), {human_bytes(report.bytes)} "
               f"({report.bytes} bytes); kept {len(report.kept)}")
    if report.entries_removed:
        summary += (f"; {'would remove' if report.dry_run else 'removed'} {len(report.entries_removed)} "
                    "superseded cache entries")
    if report.stale_uploads:
        summary += (f"; {'would abort' if report.dry_run else 'aborted'} {len(report.stale_uploads)} multipart "
                    f"upload(s) open for more than {uploads_older_than:g} hours")
    out.print(summary)
    if len(report.collected) > 10:
        out.print("--json lists every output")
    if report.dry_run and report.collected:
        out.print("dry run: nothing was deleted; add --yes to delete these")


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)
