"""MlpipeRunSensor: wait for a run of a pipeline or an endpoint (any DAG) to finish, and end with its
state: success passes, a failed run fails the sensor. ``deferrable`` follows Airflow's ``[operators]
default_deferrable`` unless the DAG says (deferred, Airflow's DagStateTrigger polls from the triggerer, not a
worker slot)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.compat import BaseSensorOperator, default_deferrable
from airflow_mlpipe.errors import MlpipeError
from airflow_mlpipe.operators.common import fail_fast

if TYPE_CHECKING:
    from airflow_mlpipe.compat import Context

TERMINAL = ("success", "failed")


class PipelineRunFailed(MlpipeError):
    """The run the sensor waited for ended in the failed state (permanent: waiting again cannot change it)."""

    permanent = True


class MlpipeRunSensor(BaseSensorOperator):
    """Wait for run ``run_id`` of DAG ``dag_id`` (a pipeline, a published version or an endpoint).

    ``run_id`` is templated, e.g. ``"{{ ti.xcom_pull(task_ids='trigger', key='trigger_run_id') }}"``.
    """

    template_fields: Sequence[str] = ("dag_id_to_watch", "run_id")

    def __init__(
        self,
        *,
        dag_id_to_watch: str,
        run_id: str,
        deferrable: bool | None = None,
        poll_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.dag_id_to_watch = dag_id_to_watch
        self.run_id = run_id
        self.deferrable = default_deferrable() if deferrable is None else bool(deferrable)
        self.poll_interval = poll_interval

    def _state(self, context: Context) -> str | None:
        try:
            return str(context["ti"].get_dagrun_state(dag_id=self.dag_id_to_watch, run_id=self.run_id))
        except Exception as exc:  # the API answers 404 for an unknown run: say which
            raise MlpipeError(f"no run {self.run_id!r} of DAG {self.dag_id_to_watch!r} ({exc})") from exc

    def _finish(self, state: str) -> str:
        state = state.split(".")[-1].lower()
        if state == "failed":
            raise PipelineRunFailed(
                f"run {self.run_id} of {self.dag_id_to_watch} failed; see its task logs, or "
                f"`mlpipe runs show {self.run_id}` for the failing step"
            )
        self.log.info("run %s of %s ended: %s", self.run_id, self.dag_id_to_watch, state)
        return state

    def poke(self, context: Context) -> bool:
        state = (self._state(context) or "").split(".")[-1].lower()
        if state in TERMINAL:
            context["ti"].xcom_push(key="return_value", value=self._finish(state))
            return True
        return False

    @fail_fast
    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        state = (self._state(context) or "").split(".")[-1].lower()
        if state in TERMINAL:
            return self._finish(state)
        from airflow.providers.standard.triggers.external_task import DagStateTrigger

        self.defer(
            trigger=DagStateTrigger(dag_id=self.dag_id_to_watch, states=list(TERMINAL), run_ids=[self.run_id],
                                    poll_interval=self.poll_interval),
            method_name="execute_complete",
        )

    @fail_fast
    def execute_complete(self, context: Context, event: Any = None) -> str:
        return self._finish(self._state(context) or "")
