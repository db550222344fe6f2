"""Shared pieces of the ``mlpipe`` commands: workspace selection, Airflow client, error handling, output.

Exit codes (every command):

- 0: done (a triggered run succeeded);
- 1: the operation ran and failed (a run failed, garbage collection could not delete...);
- 2: refused before anything happened (bad argument, unknown param, name or version not found,
  a conf Airflow rejected);
- 3: a service could not be used (workspace or Airflow unreachable, login refused, wait timed out).

Imports no Airflow at module import time: the Airflow connection is read only when no workspace was
named on the command line or in ``MLPIPE_WORKSPACE``.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import pathlib
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from airflow_mlpipe.rules import RefSyntaxError, parse_name_version
from airflow_mlpipe.spec.values import did_you_mean  # noqa: F401 - the commands import it from here

if TYPE_CHECKING:
    from airflow_mlpipe.client import AirflowClient
    from airflow_mlpipe.workspace.core import Workspace

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNAVAILABLE = 3

WORKSPACE_ENV = "MLPIPE_WORKSPACE"
DEFAULT_CONN_ID = "mlpipe_default"

# Options shared by the workspace commands.
WorkspaceOpt = Annotated[
    str | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace root: file:///dir, a local folder or s3://bucket/prefix "
        f"(default: ${WORKSPACE_ENV}, else the Airflow connection --conn-id).",
        show_default=False,
    ),
]
ConnIdOpt = Annotated[
    str,
    typer.Option("--conn-id", help="Airflow connection (type mlpipe) naming the workspace, when no --workspace."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (for scripts).")]


# ------------------------------------------------------------------------------------------ groups


def list_by_default(group: typer.Typer, command: Callable[..., None]) -> None:
    """``mlpipe GROUP`` alone runs ``GROUP list`` (as ``git branch`` lists the branches), with the list
    command's options (``mlpipe runs --pipeline p``). Options given before another sub-command are passed
    on to it when it has them (``mlpipe runs --workspace W show RUN_ID``)."""
    import inspect

    options = list(inspect.signature(command, eval_str=True).parameters.values())

    def callback(ctx: typer.Context, **values: Any) -> None:
        if ctx.invoked_subcommand is None:
            command(**values)
            return
        given = {p.name: values[p.name] for p in options if values[p.name] != p.default}
        ctx.default_map = {**(ctx.default_map or {}), ctx.invoked_subcommand: given}

    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    callback.__signature__ = inspect.Signature([context, *options])  # type: ignore[attr-defined]
    callback.__annotations__ = {p.name: p.annotation for p in [context, *options]}
    group.info.help = f"{group.info.help} Without a sub-command: {command.__name__.replace('_', ' ')}."
    group.callback(invoke_without_command=True)(callback)


# ------------------------------------------------------------------------------------------ output


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def esc(text: Any) -> str:
    from rich.markup import escape

    return escape(str(text))


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    console(stderr=True).print(f"[red]error:[/red] {esc(message)}")
    raise typer.Exit(code)


def warn(message: str) -> None:
    console(stderr=True).print(f"[yellow]warning:[/yellow] {esc(message)}")


def print_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, default=str))


def human_bytes(size: int | float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def short(digest: Any, n: int = 12) -> str:
    return str(digest)[:n] if digest else "-"


def when(value: Any) -> str:
    """An ISO timestamp or epoch seconds as ``YYYY-MM-DD HH:MM:SS`` (UTC); '-' if absent."""
    if value in (None, ""):
        return "-"
    if isinstance(value, (int, float)):
        moment = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    else:
        try:
            moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def epoch(value: Any) -> float | None:
    """Epoch seconds from epoch seconds or an ISO timestamp (None if neither)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return moment.timestamp()
    return None


def parse_ref(ref: str, what: str) -> tuple[str, int | str]:
    """``NAME`` / ``NAME:VERSION`` / ``NAME:latest`` -> (name, version number or 'latest'): the grammar of
    ``rules.parse_name_version``, a pipeline definition's."""
    try:
        name, version, _ = parse_name_version(ref)
    except RefSyntaxError as exc:
        name, sep, _ = ref.partition(":")
        if sep and _is_name(name):
            fail(f"invalid {what} version in {ref!r}: expected a number or 'latest' (versions start at 1), "
                 f"e.g. {name}:3")
        fail(f"invalid {what} reference {ref!r}: {exc.detail}")
    return name, (version or "latest")


def _is_name(text: str) -> bool:
    """True if ``text`` is a registry name alone (no version)."""
    try:
        return parse_name_version(text).version is None
    except RefSyntaxError:
        return False


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``["k=v", ...]`` -> dict; a malformed item is refused with the option's name."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{option} {item!r}: expected KEY=VALUE, e.g. {option} owner=ml-team")
        out[key.strip()] = value
    return out


# ------------------------------------------------------------------------------------------ errors


@contextlib.contextmanager
def user_errors(where: str = "") -> Iterator[None]:
    """Turn domain and usage errors into one clear message and a meaningful exit code (no traceback)."""
    from airflow_mlpipe.client import AirflowApiError
    from airflow_mlpipe.errors import ConfError, ConflictError, DefinitionError, MlpipeError, NotFoundError

    prefix = f"{where}: " if where else ""
    try:
        yield
    except typer.Exit:
        raise
    except (NotFoundError, ConfError, DefinitionError) as exc:
        fail(f"{prefix}{exc}", EXIT_REFUSED)
    except ConflictError as exc:
        fail(f"{prefix}{exc}", EXIT_FAILED)
    except AirflowApiError as exc:
        code = EXIT_REFUSED if exc.status in (400, 404, 409, 422) else EXIT_UNAVAILABLE
        fail(f"{prefix}{exc}", code)
    except MlpipeError as exc:
        fail(f"{prefix}{exc}", EXIT_UNAVAILABLE)
    except ValueError as exc:
        fail(f"{prefix}{exc}", EXIT_REFUSED)
    except OSError as exc:
        fail(f"{prefix}{exc}", EXIT_UNAVAILABLE)


# --------------------------------------------------------------------------------------- workspace


def normalise_workspace_uri(value: str) -> str:
    """``file://``, ``s3://`` URIs unchanged; a plain (even relative) local path -> its ``file://`` URI."""
    parsed = urllib.parse.urlparse(value)
    if parsed.scheme in ("file", "s3"):
        return value
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ValueError(f"unsupported workspace URI {value!r}: use file:///absolute/dir, a local folder or s3://bucket/prefix")
    return pathlib.Path(value).expanduser().resolve().as_uri()


def workspace_source(workspace: str | None, conn_id: str = DEFAULT_CONN_ID) -> tuple[str, str]:
    """-> (kind, value): ("uri", URI) from the option or the environment, or ("connection", conn_id)."""
    if workspace:
        return "uri", normalise_workspace_uri(workspace)
    env = os.environ.get(WORKSPACE_ENV, "").strip()
    if env:
        return "uri", normalise_workspace_uri(env)
    return "connection", conn_id


def airflow_importable() -> bool:
    return importlib.util.find_spec("airflow") is not None


def open_workspace(workspace: str | None, conn_id: str = DEFAULT_CONN_ID) -> Workspace:
    """The workspace to act on: ``--workspace``, else ``$MLPIPE_WORKSPACE``, else the Airflow connection
    ``conn_id`` (when Airflow is installed). S3 endpoint and keys for a URI come from the environment
    (``MLPIPE_S3_ENDPOINT_URL``, ``AWS_*``). Exits with a clear message when none is configured."""
    try:
        kind, value = workspace_source(workspace, conn_id)
    except ValueError as exc:
        fail(str(exc))
    hint = (
        f"pass --workspace file:///path/to/dir (or s3://bucket/prefix), set {WORKSPACE_ENV}, "
        f"or configure the Airflow connection {conn_id!r} (type mlpipe, extra 'workspace')"
    )
    if kind == "uri":
        from airflow_mlpipe.workspace.core import Workspace

        try:
            return Workspace.from_uri(value)
        except (ValueError, ImportError) as exc:
            fail(f"workspace {value}: {exc}")
    if not airflow_importable():
        fail(f"no workspace given: {hint}")
    from airflow_mlpipe.errors import WorkspaceError

    try:
        from airflow_mlpipe.hooks.workspace import MlpipeHook

        return MlpipeHook(conn_id).get_workspace()
    except WorkspaceError as exc:
        fail(f"no workspace given and {exc}; or {hint.split(', or ')[0]}")
    except Exception as exc:  # Airflow configuration problems: keep them one line
        fail(f"no workspace given and the Airflow connection {conn_id!r} could not be read "
             f"({type(exc).__name__}: {exc}); {hint}", EXIT_UNAVAILABLE)


# ----------------------------------------------------------------------------------------- airflow

UrlOpt = Annotated[
    str | None,
    typer.Option("--url", help="Airflow base URL (default: $MLPIPE_AIRFLOW_URL, else http://localhost:8080).",
                 show_default=False),
]
PasswordStdinOpt = Annotated[
    bool,
    typer.Option("--password-stdin",
                 help="Read the Airflow password from stdin (user from $MLPIPE_AIRFLOW_USERNAME)."),
]


def airflow_client(url: str | None = None, password_stdin: bool = False) -> AirflowClient:
    """An ``AirflowClient``; credentials from the environment (``MLPIPE_AIRFLOW_TOKEN``, or
    ``MLPIPE_AIRFLOW_USERNAME`` / ``MLPIPE_AIRFLOW_PASSWORD``) or the password from stdin."""
    from airflow_mlpipe.client import AirflowClient

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("--password-stdin: stdin was empty; pipe the password in, e.g. "
                 "`cat pw.txt | mlpipe trigger ... --password-stdin`")
        if not os.environ.get("MLPIPE_AIRFLOW_USERNAME"):
            fail("--password-stdin needs the user name in MLPIPE_AIRFLOW_USERNAME")
    client = AirflowClient(url, password=password)
    if not client.has_credentials():
        client.close()
        fail(
            f"no credentials for Airflow at {client.url}: set MLPIPE_AIRFLOW_TOKEN, or MLPIPE_AIRFLOW_USERNAME "
            "and MLPIPE_AIRFLOW_PASSWORD (or pipe the password with --password-stdin)",
        )
    return client
