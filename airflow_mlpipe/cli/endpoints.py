"""``mlpipe endpoints list | set-default``: published pipelines behind an endpoint, and which version
the endpoint runs by default (the definitions say; ``set-default`` overrides it in the workspace)."""

from __future__ import annotations

import os
import pathlib
from typing import Annotated

import typer

from airflow_mlpipe.cli.common import (
    DEFAULT_CONN_ID,
    ConnIdOpt,
    JsonOpt,
    WorkspaceOpt,
    console,
    esc,
    fail,
    list_by_default,
    open_workspace,
    print_json,
    user_errors,
)

endpoints_app = typer.Typer(help="Published pipeline endpoints and their default version.")

DefinitionsOpt = Annotated[
    pathlib.Path | None,
    typer.Option("--definitions", "-d", show_default=False,
                 help="Folder of pipeline definitions (default: $AIRFLOW__CORE__DAGS_FOLDER/pipelines, "
                      "else ./dags_examples/pipelines)."),
]


def definitions_folder(option: pathlib.Path | None) -> pathlib.Path:
    if option is not None:
        return option
    dags = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    return pathlib.Path(dags) / "pipelines" if dags else pathlib.Path("dags_examples/pipelines")


def published(folder: pathlib.Path) -> dict[str, dict]:
    """endpoint -> {versions: {N: dag_id}, default: N} from the definitions in ``folder``."""
    from airflow_mlpipe.errors import DefinitionError
    from airflow_mlpipe.spec import load_pipeline
    from airflow_mlpipe.spec.names import dag_id_for, might_publish

    if not folder.is_dir():
        fail(f"no definitions folder {folder}: pass --definitions DIR")
    endpoints: dict[str, dict] = {}
    unreadable: list[str] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            spec = load_pipeline(path)
        except (DefinitionError, OSError, UnicodeDecodeError) as exc:
            # a broken definition that may publish an endpoint: listing (or choosing a default) without it could
            # be wrong, so say so; another pipeline's broken file is `mlpipe validate`'s business, not this one's
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = "endpoint:"
            if might_publish(text):
                lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
                # a DefinitionError's lines after the first are "file:line: problem"; other errors get the path
                unreadable.append("; ".join(lines[1:4]) if len(lines) > 1 else f"{path}: {lines[0] if lines else exc!r}")
            continue
        if spec.endpoint is None:
            continue
        entry = endpoints.setdefault(spec.endpoint.name, {"versions": {}, "default": None})
        entry["versions"][spec.version] = dag_id_for(spec)
        if spec.endpoint.default:
            entry["default"] = spec.version
    if unreadable:
        fail("these definitions may publish an endpoint and cannot be read, so the published versions are not "
             "known:\n  " + "\n  ".join(unreadable) + "\nfix them (`mlpipe validate DIR` names each line)")
    for entry in endpoints.values():
        if entry["default"] is None:
            entry["default"] = max(entry["versions"])
    return endpoints


@endpoints_app.command("list")
def list_endpoints(
    definitions: DefinitionsOpt = None,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Each endpoint with its published versions (and their DAGs) and the version it runs by default."""
    from airflow_mlpipe.workspace.endpoints import default_override

    found = published(definitions_folder(definitions))
    ws = open_workspace(workspace, conn_id)
    with user_errors("endpoints"):
        rows = []
        for name, entry in sorted(found.items()):
            override = default_override(ws, name)
            rows.append({"endpoint": name, "versions": entry["versions"], "definitions_default": entry["default"],
                         "override": override, "default": override if override is not None else entry["default"]})
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="pipeline endpoints")
    for column in ("endpoint", "published versions (DAG)", "default", "set by"):
        table.add_column(column)
    for row in rows:
        versions = "\n".join(f"{v} ({dag})" for v, dag in sorted(row["versions"].items()))
        table.add_row(esc(row["endpoint"]), esc(versions), str(row["default"]),
                      "mlpipe endpoints set-default" if row["override"] is not None else "definitions")
    console().print(table)


@endpoints_app.command("set-default")
def set_default_version(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    version: Annotated[int, typer.Argument(help="Published version to run by default.")],
    definitions: DefinitionsOpt = None,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Make VERSION the endpoint's default (checked against the published versions in the definitions)."""
    from airflow_mlpipe.workspace.endpoints import set_default

    found = published(definitions_folder(definitions))
    if endpoint not in found:
        fail(f"no endpoint {endpoint!r} in the definitions; endpoints: {', '.join(sorted(found)) or 'none'}")
    versions = sorted(found[endpoint]["versions"])
    if version not in versions:
        fail(f"endpoint {endpoint!r} has no published version {version}; published versions: {versions}")
    ws = open_workspace(workspace, conn_id)
    with user_errors(f"endpoint {endpoint}"):
        doc = set_default(ws, endpoint, version, published=sorted(found[endpoint]["versions"]))
    if as_json:
        print_json(doc)
        return
    console().print(f"endpoint {esc(endpoint)} now runs version {version} by default "
                    f"(DAG {esc(found[endpoint]['versions'][version])})")


list_by_default(endpoints_app, list_endpoints)  # `mlpipe endpoints` alone lists


def register(app: typer.Typer) -> None:
    app.add_typer(endpoints_app, name="endpoints")
