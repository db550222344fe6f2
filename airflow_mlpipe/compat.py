"""The one place that imports the Airflow 3 Task SDK. Everything else imports from here."""

from __future__ import annotations

from typing import Any

from airflow.sdk import (  # noqa: F401
    DAG,
    Asset,
    AssetAlias,
    AssetAny,
    AssetOrTimeSchedule,
    BaseHook,
    BaseOperator,
    BaseSensorOperator,
    Context,
    CronTriggerTimetable,
    Param,
    TaskGroup,
    get_parsing_context,
)
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException  # noqa: F401
from airflow.triggers.base import BaseTrigger, TriggerEvent  # noqa: F401


def default_deferrable() -> bool:
    """Airflow's ``[operators] default_deferrable`` (False unless configured): what a sensor of ours does when
    its DAG does not say, as every Airflow provider's deferrable operators do."""
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def task_state_store(context: Any) -> Any:
    """The task's state store (Airflow 3.3+: kept across reschedules and retries of one task instance), or
    None where this Airflow has none."""
    try:
        return context["task_state_store"]
    except (KeyError, TypeError):
        return None
