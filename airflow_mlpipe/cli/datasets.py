"""``mlpipe datasets register | list | show | notify``: the versioned dataset registry.

A new version registered from the command line is announced to Airflow (when ``MLPIPE_AIRFLOW_URL`` and
credentials are set) as an event on the dataset's Asset, so pipelines scheduled on the dataset run.
"""

from __future__ import annotations

import os
import pathlib
from typing import Annotated, Any

import typer

from airflow_mlpipe.cli.common import (
    DEFAULT_CONN_ID,
    EXIT_FAILED,
    ConnIdOpt,
    JsonOpt,
    UrlOpt,
    WorkspaceOpt,
    console,
    esc,
    fail,
    human_bytes,
    list_by_default,
    open_workspace,
    parse_pairs,
    parse_ref,
    print_json,
    short,
    user_errors,
)
from airflow_mlpipe.cli.registry import names_rows, names_table, version_detail, versions_table

datasets_app = typer.Typer(help="Registered, versioned datasets of the workspace.")

#: uploads at least this large get a progress bar (when stderr is a terminal, or with --progress).
PROGRESS_THRESHOLD = 8 * 1024 * 1024


def local_size(path: pathlib.Path) -> tuple[int, int]:
    """(bytes, files) below ``path`` (a file or a folder; symlinked folders are not entered)."""
    if path.is_file():
        return path.stat().st_size, 1
    total = count = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
                count += 1
            except OSError:
                continue
    return total, count


def register_with_progress(ws: Any, name: str, path: pathlib.Path, show_progress: bool, **kwargs: Any) -> Any:
    """``ws.datasets.register`` with a rich progress bar on stderr: a pulse while the content is hashed,
    then bytes uploaded (the datastore's upload callbacks). Nothing is uploaded for known content."""
    if not show_progress:
        return ws.datasets.register(name, path, **kwargs)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    datastore = ws.datastore
    original = datastore.upload_many
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"hashing {path.name}", total=None)
        state = {"total": 0}

        def upload_many(items: Any, callback: Any = None) -> Any:
            items = list(items)
            state["total"] += sum(os.path.getsize(p) for p, _key in items)
            progress.update(task, description=f"uploading {name}", total=state["total"])

            def advance(n: int) -> None:
                progress.advance(task, n)
                if callback is not None:
                    callback(n)

            return original(items, advance)

        datastore.upload_many = upload_many  # instance attribute: shadows the method for this call only
        try:
            return ws.datasets.register(name, path, **kwargs)
        finally:
            del datastore.upload_many


def announce(name: str, version: Any, url: str | None = None) -> dict[str, Any]:
    """Emit the Asset event of a new dataset version through the Airflow REST API.
    -> {"status": "emitted" | "unknown_asset" | "skipped" | "error", ...}."""
    from airflow_mlpipe.client import AirflowApiError, AirflowClient
    from airflow_mlpipe.spec.names import dataset_uri

    url = url or os.environ.get("MLPIPE_AIRFLOW_URL")
    if not url:
        return {"status": "skipped", "message": "no Airflow configured (MLPIPE_AIRFLOW_URL is not set); "
                                                "no pipeline was told about the new version"}
    uri = dataset_uri(name)
    with AirflowClient(url) as client:
        if not client.has_credentials():
            return {"status": "skipped", "message": f"no credentials for Airflow at {client.url} (set "
                    "MLPIPE_AIRFLOW_TOKEN, or MLPIPE_AIRFLOW_USERNAME and MLPIPE_AIRFLOW_PASSWORD); "
                    "no pipeline was told about the new version"}
        try:
            asset = client.find_asset(uri)
            if asset is None:
                return {"status": "unknown_asset", "uri": uri, "message": (
                    f"Airflow at {client.url} has no asset {uri}: no DAG is scheduled on (or produces) "
                    f"dataset {name!r}, so there is nothing to trigger")}
            extra = {"version": version.version, "digest": version.digest, "source": "mlpipe datasets"}
            event = client.create_asset_event(asset["id"], extra)
        except AirflowApiError as exc:
            return {"status": "error", "uri": uri, "message": str(exc)}
    dags = sorted(d["dag_id"] for d in asset.get("scheduled_dags") or [] if d.get("dag_id"))
    where = f"; scheduled on it: {', '.join(dags)}" if dags else "; no DAG is scheduled on it"
    return {"status": "emitted", "uri": uri, "asset_id": asset["id"], "event_id": event.get("id"),
            "scheduled_dags": dags, "message": f"announced to Airflow at {client.url} (asset {uri}){where}"}


def _report_announcement(result: dict[str, Any], name: str, number: int) -> None:
    if result["status"] == "emitted":
        console().print(f"[green]{esc(result['message'])}[/]")
    elif result["status"] == "error":
        fail(f"dataset {name} version {number} is registered, but Airflow was not told: {result['message']}. "
             f"Fix that, then run `mlpipe datasets notify {name}:{number}`", EXIT_FAILED)
    else:
        console().print(esc(result["message"]))


@datasets_app.command("register")
def register_dataset(
    name: Annotated[str, typer.Argument(help="Dataset name (letters, digits, '_', '.', '-').")],
    path: Annotated[pathlib.Path, typer.Argument(help="A local file or folder to upload.")],
    description: Annotated[str, typer.Option("--description", "-d", help="What this version holds.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="KEY=VALUE, repeatable.")] = None,
    notify: Annotated[bool, typer.Option(help="Announce a new version to Airflow (Asset event).")] = True,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", show_default=False,
                                                  help="Progress bar (default: large uploads on a terminal).")] = None,
    url: UrlOpt = None,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Upload a local file or folder as the next version of a dataset (known content: its existing version)."""
    tags = parse_pairs(tag, "--tag")
    path = path.expanduser()
    if not path.exists():
        fail(f"cannot register dataset {name!r}: {path} does not exist; give a local file or folder")
    path = path.resolve()
    ws = open_workspace(workspace, conn_id)
    size, files = local_size(path)
    if files == 0:
        fail(f"cannot register dataset {name!r}: folder {path} holds no files")
    if progress is None:
        progress = not as_json and size >= PROGRESS_THRESHOLD and console(stderr=True).is_terminal
    with user_errors(f"dataset {name!r}"):
        version = register_with_progress(ws, name, path, bool(progress) and not as_json,
                                         description=description, tags=tags)
    created = version.is_new
    announcement = announce(name, version, url) if created and notify else None
    if as_json:
        print_json({"name": name, "version": version.version, "created": created, "record": version.to_dict(),
                    "asset_event": announcement})
        if announcement and announcement["status"] == "error":
            raise typer.Exit(EXIT_FAILED)
        return
    out = console()
    if created:
        out.print(f"registered dataset [bold]{esc(name)}[/] version [bold]{version.version}[/] "
                  f"({short(version.digest)}, {human_bytes(version.size)} in {version.files} file(s))")
    else:
        out.print(f"dataset [bold]{esc(name)}[/] already holds this content as version [bold]{version.version}[/] "
                  f"({short(version.digest)}); nothing uploaded, no new version")
    if announcement is not None:
        _report_announcement(announcement, name, version.version)


@datasets_app.command("notify")
def notify_dataset(
    ref: Annotated[str, typer.Argument(help="NAME or NAME:VERSION (default: the latest version).")],
    url: UrlOpt = None,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Announce a registered version to Airflow again (an Asset event: pipelines scheduled on it run)."""
    name, number = parse_ref(ref, "dataset")
    ws = open_workspace(workspace, conn_id)
    with user_errors():
        version = ws.datasets.get(name, number)
    result = announce(name, version, url)
    if as_json:
        print_json({"name": name, "version": version.version, "asset_event": result})
        raise typer.Exit(EXIT_FAILED if result["status"] in ("error", "skipped") else 0)
    if result["status"] == "skipped":
        fail(result["message"])
    _report_announcement(result, name, version.version)


@datasets_app.command("list")
def list_datasets(
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """List registered datasets with their latest version."""
    ws = open_workspace(workspace, conn_id)
    with user_errors(f"datasets in {ws.uri}"):
        rows = names_rows(ws.datasets)
    if as_json:
        print_json({"workspace": ws.uri, "datasets": rows})
    elif not rows:
        console().print(f"no datasets registered in {esc(ws.uri)}; add one with `mlpipe datasets register NAME PATH`")
    else:
        console().print(names_table(rows, "datasets", ws.uri))


@datasets_app.command("show")
def show_dataset(
    ref: Annotated[str, typer.Argument(help="NAME (every version) or NAME:VERSION (one version, with its files).")],
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset's versions (digest, size, files, created, producing run), or one version in detail."""
    show_versions(ref, "datasets", workspace, conn_id, as_json)


def show_versions(ref: str, kind: str, workspace: str | None, conn_id: str, as_json: bool) -> None:
    name, number = parse_ref(ref, kind[:-1])
    ws = open_workspace(workspace, conn_id)
    registry = getattr(ws, kind)
    one = ":" in ref
    with user_errors():
        versions = [registry.get(name, number)] if one else registry.list_versions(name)
        if not versions:
            registry.get(name)  # raises NotFoundError with the registered names
        aliases = registry.list_aliases(name) if kind == "models" else {}
        alias_records = {a: registry.alias_record(name, a) for a in aliases}
        manifest = ws.read_manifest(versions[0].key) if one else None
    if as_json:
        doc: dict[str, Any] = {"workspace": ws.uri, "name": name, "versions": [v.to_dict() for v in versions]}
        if kind == "models":
            doc["aliases"] = alias_records
        if one:
            doc["manifest"] = manifest
        print_json(doc)
        return
    out = console()
    if one:
        out.print(version_detail(versions[0], manifest))
    else:
        out.print(versions_table(name, versions, kind, aliases))
    if kind == "models" and alias_records:
        from airflow_mlpipe.cli.models import aliases_table

        out.print(aliases_table(name, alias_records))


list_by_default(datasets_app, list_datasets)  # `mlpipe datasets` alone lists


def register(app: typer.Typer) -> None:
    app.add_typer(datasets_app, name="datasets")
