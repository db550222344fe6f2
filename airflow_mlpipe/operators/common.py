"""What every airflow-mlpipe operator does first: refuse a ``dag_run.conf`` key that is not a declared
param (Airflow lets unknown keys through), before any step runs and without a retry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_mlpipe.errors import ConfError

RUN_SWITCHES = frozenset({"regenerate_outputs"})


def unknown_conf_keys(dag: Any, conf: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    declared = set(dag.params.keys()) if dag is not None else set()
    declared |= RUN_SWITCHES
    return sorted(set(conf) - declared), sorted(declared)


def refuse_unknown_conf(op: Any, conf: Mapping[str, Any]) -> None:
    """Raise AirflowFailException (no retry) naming the unknown keys and the declared params."""
    unknown, declared = unknown_conf_keys(op.dag, conf)
    if not unknown:
        return
    from airflow_mlpipe.compat import AirflowFailException

    message = (
        f"dag_run.conf of {op.dag_id!r} has unknown key(s) {unknown}; declared params: {declared}. "
        "Fix the conf (or declare the param in the pipeline definition) and trigger again; no step ran."
    )
    raise AirflowFailException(message) from ConfError(message)
