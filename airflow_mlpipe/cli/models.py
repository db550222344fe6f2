"""``mlpipe models list | show | set-alias``: the versioned model registry and its aliases."""

from __future__ import annotations

import getpass
from typing import Annotated, Any

import typer

from airflow_mlpipe.cli.common import (
    DEFAULT_CONN_ID,
    ConnIdOpt,
    JsonOpt,
    WorkspaceOpt,
    console,
    esc,
    list_by_default,
    open_workspace,
    print_json,
    user_errors,
    when,
)
from airflow_mlpipe.cli.registry import names_rows, names_table

models_app = typer.Typer(help="Registered model versions and their aliases (production, staging...).")


def reason_text(reason: Any) -> str:
    if isinstance(reason, dict):
        text = reason.get("text") or reason.get("reason") or reason.get("decision")
        rest = {k: v for k, v in reason.items() if k not in ("text", "reason", "decision")}
        parts = [str(text)] if text else []
        parts += [f"{k}={v}" for k, v in sorted(rest.items())]
        return "; ".join(parts) or "-"
    return str(reason) if reason else "-"


def aliases_table(name: str, records: dict[str, dict | None]) -> Any:
    """Each alias with its current version and its history (newest first)."""
    from rich.table import Table

    table = Table(title=f"aliases of model {name}")
    for column in ("alias", "version", "history (newest first)"):
        table.add_column(column, overflow="fold")
    for alias, record in sorted(records.items()):
        record = record or {}
        history = list(record.get("history") or [])[::-1]
        lines = [f"{when(h.get('set_at'))}  -> {h.get('version')}  ({reason_text(h.get('reason'))})" for h in history]
        table.add_row(esc(alias), str(record.get("version", "-")), esc("\n".join(lines) or "-"))
    return table


@models_app.command("list")
def list_models(
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """List registered models: latest version, its metrics, and the aliases."""
    ws = open_workspace(workspace, conn_id)
    with user_errors(f"models in {ws.uri}"):
        rows = names_rows(ws.models)
    if as_json:
        print_json({"workspace": ws.uri, "models": rows})
    elif not rows:
        console().print(f"no models registered in {esc(ws.uri)}")
    else:
        console().print(names_table(rows, "models", ws.uri))


@models_app.command("show")
def show_model(
    ref: Annotated[str, typer.Argument(help="NAME (every version) or NAME:VERSION.")],
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Show a model's versions with their metrics, and its aliases with their history."""
    from airflow_mlpipe.cli.datasets import show_versions

    show_versions(ref, "models", workspace, conn_id, as_json)


@models_app.command("set-alias")
def set_alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production or staging.")],
    version: Annotated[int, typer.Argument(min=1, help="The version the alias should name.")],
    reason: Annotated[str | None, typer.Option("--reason", "-r", help="Why (kept in the alias history).")] = None,
    workspace: WorkspaceOpt = None,
    conn_id: ConnIdOpt = DEFAULT_CONN_ID,
    as_json: JsonOpt = False,
) -> None:
    """Point ALIAS of model NAME at VERSION (compare-and-swap; the history keeps every move)."""
    ws = open_workspace(workspace, conn_id)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    with user_errors(f"model {name!r}"):
        previous = ws.models.get_alias(name, alias)
        record = ws.models.set_alias(name, alias, version,
                                     reason={"text": reason, "by": "mlpipe models set-alias", "user": user})
    if as_json:
        print_json({"name": name, "alias": alias, "version": version, "previous": previous, "record": record})
        return
    if previous == version:
        change = f"already at version {version} (history updated)"
    elif previous is None:
        change = f"set to version {version}"
    else:
        change = f"moved from version {previous} to {version}"
    console().print(f"alias [bold]{esc(alias)}[/] of model [bold]{esc(name)}[/] {change}")


list_by_default(models_app, list_models)  # `mlpipe models` alone lists


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
