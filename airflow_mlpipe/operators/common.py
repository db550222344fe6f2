"""What every airflow-mlpipe operator shares:

- ``fail_fast``: a permanent MlpipeError fails the task at once, without Airflow's retries;
- ``refuse_bad_conf``: refuse a ``dag_run.conf`` that the trigger should have refused (a key that is not a
  declared param, a value no step can use: ``spec/values.py``), before any step runs and without a retry.
  The API server plugin refuses the same conf at trigger time; this is the last line of defence for the
  doors it does not guard (``airflow dags trigger``, TriggerDagRunOperator, a DAG without the plugin)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from airflow_mlpipe.errors import ConfError, MlpipeError


def declared_params(dag: Any) -> dict[str, dict[str, Any]]:
    """name -> {"value": default, "schema": JSON schema} of the DAG's params (Param objects or plain values)."""
    params = getattr(dag, "params", None)
    if params is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name in params:
        param = params.get_param(name) if hasattr(params, "get_param") else params[name]
        schema = getattr(param, "schema", None)
        out[name] = {"value": getattr(param, "value", param), "schema": dict(schema) if schema else {}}
    return out

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


def refuse_bad_conf(op: Any, conf: Mapping[str, Any], unknown_keys: bool = True) -> None:
    """Raise AirflowFailException (no retry) naming each unknown key (with the declared params; not with
    ``unknown_keys=False``) and each value the rules refuse."""
    if not conf:
        return
    from airflow_mlpipe.spec.values import conf_problems  # not at DAG parse time: the spec layer stays out

    problems = conf_problems(op.dag_id, declared_params(op.dag), conf, unknown_keys=unknown_keys)
    if not problems:
        return
    raise ConfError(  # permanent: fail_fast fails the task without a retry
        f"dag_run.conf of {op.dag_id!r} refused: {'; '.join(problems)}. Fix the conf (or declare the param in "
        "the pipeline definition) and trigger again; no step ran."
    )
