"""``mlpipe``: the command line of airflow-mlpipe.

Each command group lives in its own module exposing ``register(app)``; add a module to
``COMMAND_MODULES`` to plug it in (``cli/runs.py``, ``cli/datasets.py``...). Keep Airflow and other
heavy imports inside the command functions.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="mlpipe",
    help="ML pipelines on Apache Airflow: validate, inspect and run pipeline definitions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Exit codes: 0 done, 1 failed (e.g. the run failed), 2 refused (bad argument, unknown name or "
    "param), 3 unavailable (workspace or Airflow unreachable, login refused, timeout). Every command has --json.",
)

#: modules that define ``register(app: typer.Typer) -> None``.
COMMAND_MODULES = (
    "airflow_mlpipe.cli.pipelines",
    "airflow_mlpipe.cli.trigger",
    "airflow_mlpipe.cli.runs",
    "airflow_mlpipe.cli.datasets",
    "airflow_mlpipe.cli.models",
    "airflow_mlpipe.cli.gc",
    "airflow_mlpipe.cli.endpoints",
)


def _register() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(app)


_register()


def main() -> None:
    """Console script entry point (``mlpipe``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
