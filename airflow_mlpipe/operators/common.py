"""What every airflow-mlpipe operator shares: ``fail_fast`` (a permanent MlpipeError fails the task at
once, without Airflow's retries) and the refusal of a ``dag_run.conf`` key that is not a declared param
(Airflow lets unknown keys through), before any step runs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow_mlpipe.errors import ConfError, MlpipeError

RUN_SWITCHES = frozenset({"regenerate_outputs"})

F = TypeVar("F", bound=Callable[..., Any])

NOT_RETRIED = "permanent failure, not retried (another attempt cannot fix it)"


def fail_fast(method: F) -> F:
    """Decorate an operator's ``execute`` (or ``execute_complete``): a permanent MlpipeError (see
    ``airflow_mlpipe.errors``) becomes Airflow's AirflowFailException, so the task fails in this attempt
    instead of waiting for retries that cannot help; transient errors pass through and are retried."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MlpipeError as exc:
            if not exc.permanent:
                raise
            from airflow_mlpipe.compat import AirflowFailException

            raise AirflowFailException(f"{type(exc).__name__}: {exc} [{NOT_RETRIED}]") from exc

    return wrapper  # type: ignore[return-value]


def unknown_conf_keys(dag: Any, conf: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    declared = set(dag.params.keys()) if dag is not None else set()
    declared |= RUN_SWITCHES
    return sorted(set(conf) - declared), sorted(declared)


def refuse_unknown_conf(op: Any, conf: Mapping[str, Any]) -> None:
    """Raise ConfError (permanent: ``fail_fast`` fails the task without a retry) naming the unknown keys
    and the declared params."""
    unknown, declared = unknown_conf_keys(op.dag, conf)
    if not unknown:
        return
    raise ConfError(
        f"dag_run.conf of {op.dag_id!r} has unknown key(s) {unknown}; declared params: {declared}. "
        "Fix the conf (or declare the param in the pipeline definition) and trigger again; no step ran."
    )
