"""The one place that imports the Airflow 3 Task SDK. Everything else imports from here."""

from __future__ import annotations

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
