"""Views shared by ``mlpipe datasets`` and ``mlpipe models``: names and versions of a registry."""

from __future__ import annotations

from typing import Any

from airflow_mlpipe.cli.common import esc, human_bytes, short, when


def producing_run_text(run: Any) -> str:
    if not isinstance(run, dict) or not run:
        return "-"
    if run.get("run_id"):
        where = "/".join(str(run[k]) for k in ("pipeline", "step", "output") if run.get(k))
        return f"{run['run_id']} ({where})" if where else str(run["run_id"])
    return ", ".join(f"{k}={v}" for k, v in sorted(run.items()) if isinstance(v, (str, int, float)))


def version_metrics(version: Any) -> dict[str, Any]:
    """Metrics recorded with a (model) version: ``extra.metrics``, else ``producing_run.metrics``."""
    for holder in (version.extra, version.producing_run):
        if isinstance(holder, dict) and isinstance(holder.get("metrics"), dict):
            return dict(holder["metrics"])
    return {}


def metrics_text(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
    ) or "-"


def names_rows(registry: Any) -> list[dict[str, Any]]:
    """One row per name: version count and its latest version (for ``list``). Versions are numbered 1..N
    without gaps, so the count is the latest number: nothing lists a name's history."""
    rows = []
    for name in registry.list_names():
        number = registry.latest_number(name)
        if not number:
            continue
        latest = registry.get(name, number)
        row = {
            "name": name,
            "versions": number,
            "latest": latest.version,
            "digest": latest.digest,
            "size": latest.size,
            "files": latest.files,
            "created": latest.created,
            "description": latest.description,
        }
        if registry.kind == "models":
            row["aliases"] = registry.list_aliases(name)
            row["metrics"] = version_metrics(latest)
        rows.append(row)
    return rows


def names_table(rows: list[dict[str, Any]], kind: str, uri: str) -> Any:
    from rich.table import Table

    table = Table(title=f"{kind} in {uri}")
    columns = ["name", "versions", "latest", "digest", "size", "created"]
    if kind == "models":
        columns += ["aliases", "metrics (latest)"]
    else:
        columns += ["description"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        cells = [esc(row["name"]), str(row["versions"]), str(row["latest"]), short(row["digest"]),
                 human_bytes(row["size"]), when(row["created"])]
        if kind == "models":
            aliases = ", ".join(f"{a}->{v}" for a, v in sorted(row["aliases"].items())) or "-"
            cells += [esc(aliases), esc(metrics_text(row["metrics"]))]
        else:
            cells.append(esc(row["description"] or "-"))
        table.add_row(*cells)
    return table


def versions_table(name: str, versions: list[Any], kind: str, aliases: dict[str, int] | None = None) -> Any:
    from rich.table import Table

    by_version: dict[int, list[str]] = {}
    for alias, number in (aliases or {}).items():
        by_version.setdefault(number, []).append(alias)
    table = Table(title=f"{kind[:-1]} {name}: {len(versions)} version(s)")
    columns = ["version", "digest", "size", "files", "created", "producing run"]
    if kind == "models":
        columns[1:1] = ["aliases"]
        columns.append("metrics")
    for column in columns:
        table.add_column(column, overflow="fold")
    for v in versions:
        cells = [str(v.version), short(v.digest), human_bytes(v.size), str(v.files), when(v.created),
                 esc(producing_run_text(v.producing_run))]
        if kind == "models":
            cells.insert(1, esc(", ".join(sorted(by_version.get(v.version, []))) or "-"))
            cells.append(esc(metrics_text(version_metrics(v))))
        table.add_row(*cells)
    return table


def version_detail(version: Any, manifest: dict | None) -> Any:
    """Key/value table of one version, with its file list (first 20 files)."""
    from rich.table import Table

    table = Table(title=f"{version.kind[:-1]} {version.name} version {version.version}", show_header=False,
                  title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("digest", version.digest)
    table.add_row("uri", esc(version.uri))
    table.add_row("size", f"{human_bytes(version.size)} in {version.files} file(s)")
    table.add_row("created", when(version.created))
    table.add_row("description", esc(version.description or "-"))
    table.add_row("tags", esc(", ".join(f"{k}={v}" for k, v in sorted((version.tags or {}).items())) or "-"))
    table.add_row("producing run", esc(producing_run_text(version.producing_run)))
    if version.kind == "models":
        table.add_row("metrics", esc(metrics_text(version_metrics(version))))
    if manifest:
        files = sorted(manifest.get("files", {}).items())
        lines = [f"{rel}  {human_bytes(meta.get('size'))}  {short(meta.get('sha256'))}" for rel, meta in files[:20]]
        if len(files) > 20:
            lines.append(f"... and {len(files) - 20} more")
        table.add_row("files", esc("\n".join(lines)))
    return table
