"""Sensors on the workspace: a new dataset version, new objects under a prefix, a new model version or
an alias move. ``deferrable`` follows Airflow's ``[operators] default_deferrable`` unless the DAG says: deferred,
the wait happens in the triggerer, not in a worker slot. The baseline (what "new" is measured against) is taken
once per task instance and kept in Airflow's task state store, so a sensor in ``mode="reschedule"`` (or a retry)
still sees a change that happened while it was not running."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.compat import BaseSensorOperator, default_deferrable, task_state_store
from airflow_mlpipe.errors import WorkspaceError
from airflow_mlpipe.operators.common import fail_fast

if TYPE_CHECKING:
    from airflow_mlpipe.compat import Context


class _WorkspaceChangeSensor(BaseSensorOperator):
    kind = "datasets"

    def __init__(
        self,
        *,
        name: str | None = None,
        alias: str | None = None,
        prefix: str | None = None,
        after_version: int | None = None,
        mlpipe_conn_id: str = "mlpipe_default",
        deferrable: bool | None = None,
        poll_interval: float = 30.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.name = name
        self.alias = alias
        self.prefix = prefix
        self.after_version = after_version
        self.mlpipe_conn_id = mlpipe_conn_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.poll_interval = poll_interval
        self._baseline: Any = None

    def _workspace(self) -> Any:
        from airflow_mlpipe.hooks.workspace import MlpipeHook

        return MlpipeHook(self.mlpipe_conn_id).get_workspace()

    def _start(self) -> Any:
        from airflow_mlpipe.triggers.workspace import current_state

        if self.after_version is not None and self.prefix is None:
            return int(self.after_version)  # a version number, or (alias) the version it is known to hold
        return current_state(self._workspace(), self.kind, self.name, self.alias, self.prefix)

    BASELINE_KEY = "mlpipe_baseline"

    def _baseline_for(self, context: Context) -> Any:
        """The baseline of this task instance: taken on its first run, then read back from the task state
        store on a reschedule or a retry (taking it again would swallow a change made in between)."""
        store = task_state_store(context)
        if store is not None:
            kept = store.get(self.BASELINE_KEY)
            if isinstance(kept, dict) and "baseline" in kept:
                return kept["baseline"]
        baseline = self._start()
        if store is not None:
            store.set(self.BASELINE_KEY, {"baseline": baseline})
        return baseline

    @fail_fast
    def execute(self, context: Context) -> Any:
        self._baseline = self._baseline_for(context)
        if not self.deferrable:
            return super().execute(context)
        from airflow_mlpipe.triggers.workspace import WorkspaceChangeTrigger

        self.log.info("waiting for a change of %s (baseline %r)", self._what(), self._short(self._baseline))
        self.defer(
            trigger=WorkspaceChangeTrigger(
                mlpipe_conn_id=self.mlpipe_conn_id,
                kind=self.kind,
                name=self.name,
                alias=self.alias,
                prefix=self.prefix,
                baseline=self._baseline,
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Context) -> Any:
        from airflow_mlpipe.triggers.workspace import check_change

        event = check_change(self._workspace(), self.kind, self.name, self.alias, self.prefix, self._baseline)
        if event is not None:
            context["ti"].xcom_push(key="return_value", value=event)
            return True
        return False

    @fail_fast
    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") != "changed":
            raise WorkspaceError(f"waiting for {self._what()} failed: {event.get('message')}")
        self.log.info("%s changed: %s", self._what(), {k: v for k, v in event.items() if k != "new_keys"})
        return event

    def _what(self) -> str:
        if self.prefix is not None:
            return f"workspace prefix {self.prefix!r}"
        if self.alias:
            return f"{self.kind[:-1]} alias {self.name}@{self.alias}"
        return f"{self.kind[:-1]} {self.name!r}"

    @staticmethod
    def _short(value: Any) -> Any:
        return f"{len(value)} objects" if isinstance(value, list) else value


class MlpipeDatasetSensor(_WorkspaceChangeSensor):
    """Wait for a new version of dataset ``name`` (newer than ``after_version``, default: the latest when
    the sensor starts), or for new objects under a workspace ``prefix``."""

    template_fields: Sequence[str] = ("name", "prefix", "after_version")
    kind = "datasets"

    def __init__(
        self, *, name: str | None = None, prefix: str | None = None, after_version: int | None = None, **kwargs: Any
    ) -> None:
        if (name is None) == (prefix is None):
            raise ValueError("MlpipeDatasetSensor needs exactly one of name= (a dataset) or prefix= (a path)")
        super().__init__(name=name, prefix=prefix, after_version=after_version, **kwargs)


class MlpipeModelSensor(_WorkspaceChangeSensor):
    """Wait for a new version of model ``name`` (newer than ``after_version``), or (with ``alias``) for that
    alias to point at another version than ``after_version`` (default: the one it holds when the sensor
    starts)."""

    template_fields: Sequence[str] = ("name", "alias", "after_version")
    kind = "models"

    def __init__(
        self, *, name: str, alias: str | None = None, after_version: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name=name, alias=alias, after_version=after_version, **kwargs)
