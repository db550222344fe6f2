"""Model lifecycle operators: register a model version, and champion/challenger promotion.

Both are workspace operations that run on the worker (no compute target): cheap, idempotent, and
recorded in the run record like any step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.compat import BaseOperator
from airflow_mlpipe.errors import DefinitionError
from airflow_mlpipe.operators.common import fail_fast
from airflow_mlpipe.operators.steprun import StepResult, StepRun, wire_inputs

if TYPE_CHECKING:
    from airflow_mlpipe.compat import Context


def _numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class MlpipeRegisterModelOperator(BaseOperator):
    """Register the folder of input ``model`` as a new version of ``model_name``.

    The version records the metrics logged by the ``metrics_from`` steps of this run, the run's params,
    and the lineage: every registered dataset version the run's steps read. Registering content that a
    version already holds returns that version (shown as reused). ``aliases`` are moved unconditionally.
    A new version emits an event on the model's Asset. ``inputs["model"]`` is a reference like a step's
    input, or ``train.output_ref("model")`` (which also makes ``train`` this task's upstream).
    """

    template_fields: Sequence[str] = ("model_name",)
    ui_color = "#f5e6c8"

    def __init__(
        self,
        *,
        model_name: str,
        inputs: Mapping[str, str],
        metrics_from: Sequence[str] = (),
        aliases: Sequence[str] = (),
        pipeline: str | None = None,
        mlpipe_conn_id: str = "mlpipe_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        #: step name -> task id of the steps whose outputs ``output_ref`` wired in
        self.upstream_steps: dict[str, str] = {}
        self.inputs = wire_inputs(self, inputs)
        self.metrics_from = list(metrics_from)
        self.aliases = list(aliases)
        self.pipeline = pipeline
        self.mlpipe_conn_id = mlpipe_conn_id
        from airflow_mlpipe.assets import model_alias_for

        # built from the name as written: a templated name gets the shared alias, not "{{ ... }}"
        self._model_outlet = model_alias_for(model_name)
        self.outlets = [*self.outlets, self._model_outlet]

    @property
    def step_name(self) -> str:
        return self.task_id

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlpipe.assets import model_asset

        # this task may be the run's first (a hand-written DAG): StepRun opens the run's record
        run = StepRun.start(self, context)
        ws, pipeline, run_id = run.ws, run.pipeline, run.run_id
        model_input = run.resolve_input("model", self.inputs["model"])
        metrics: dict[str, Any] = {}
        for step in self.metrics_from:
            metrics.update(run.upstream_result(step).get("metrics") or {})
        lineage = self._lineage(ws, pipeline, run_id)
        version = ws.models.register(
            self.model_name,
            model_input["key"],
            description=f"registered by step {self.task_id!r} of pipeline {pipeline!r}",
            producing_run={"pipeline": pipeline, "run_id": run_id, "step": self.task_id},
            extra={"metrics": metrics, "params": run.params, "lineage": lineage, "source": model_input["source"]},
        )
        created = version.is_new
        if created:
            context["outlet_events"][self._model_outlet].add(
                model_asset(self.model_name), extra={"version": version.version, "digest": version.digest}
            )
            self.log.info("registered model %s version %s (metrics %s)", self.model_name, version.version, metrics)
        else:
            self.log.info("model %s already holds this content as version %s: reused", self.model_name,
                          version.version)
        for alias in self.aliases:
            ws.models.set_alias(self.model_name, alias, version.version,
                                reason={"by": "register_model", "pipeline": pipeline, "run_id": run_id})
            self.log.info("alias %s@%s -> version %s", self.model_name, alias, version.version)
        stored = ws.models.get(self.model_name, version.version)
        model = {"name": self.model_name, "version": version.version, "digest": version.digest,
                 "metrics": (stored.extra or {}).get("metrics", metrics)}
        outputs = {"model": {"key": version.key, "uri": version.uri, "digest": version.digest}}
        return run.finish(StepResult(self.task_id, not created, outputs, model["metrics"], model=model),
                          inputs={"model": model_input}, lineage=lineage)

    @staticmethod
    def _lineage(ws: Any, pipeline: str, run_id: str) -> dict[str, Any]:
        """Registered dataset/model versions read by this run's steps, by step and input."""
        run = ws.runs.get_run(pipeline, run_id) or {}
        lineage: dict[str, Any] = {}
        for step, record in (run.get("steps") or {}).items():
            for name, inp in (record.get("inputs") or {}).items():
                if isinstance(inp, dict) and inp.get("version") is not None:
                    lineage[f"{step}.{name}"] = {"name": inp.get("name"), "version": inp["version"],
                                                 "digest": inp.get("digest")}
        return lineage


class MlpipeCompareOperator(BaseOperator):
    """Champion/challenger: promote the version registered by the ``candidate`` step to ``alias`` only if
    its ``metric`` beats the current holder's by more than ``margin`` (``direction`` max: higher is better,
    min: lower is better). The decision, with both values, is recorded on the version, in the alias
    history, in the run record and in XCom. With no current holder the candidate is promoted."""

    template_fields: Sequence[str] = ("metric", "alias")
    ui_color = "#e8d8f5"

    def __init__(
        self,
        *,
        candidate: str,
        metric: str,
        direction: str = "max",
        margin: float = 0.0,
        alias: str = "production",
        model_name: str | None = None,
        pipeline: str | None = None,
        mlpipe_conn_id: str = "mlpipe_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if model_name:
            from airflow_mlpipe.assets import model_alias

            self.outlets = [*self.outlets, model_alias(model_name)]
        if direction not in ("max", "min"):
            raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
        self.candidate = candidate
        self.metric = metric
        self.direction = direction
        self.margin = float(margin)
        self.alias = alias
        self.model_name = model_name
        self.pipeline = pipeline
        self.mlpipe_conn_id = mlpipe_conn_id

    @property
    def step_name(self) -> str:
        return self.task_id

    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        # the run record exists: the candidate is a register step of this run, which opened it
        run = StepRun.start(self, context, open_run=False)
        ws, pipeline, run_id = run.ws, run.pipeline, run.run_id
        model = run.upstream_result(self.candidate).get("model")
        if not model:
            raise DefinitionError(f"compare step {self.task_id!r}: step {self.candidate!r} registered no model; "
                                  "make the compare step's candidate a register_model step")
        name, version = model["name"], int(model["version"])
        value = self._metric(model.get("metrics") or {}, f"candidate {name} version {version}")
        holder = ws.models.get_alias(name, self.alias)
        previous = ws.models.decision(name, version)
        same_question = {"metric": self.metric, "direction": self.direction, "margin": self.margin,
                         "alias": self.alias}
        if (isinstance(previous, dict) and all(previous.get(k) == v for k, v in same_question.items())
                and (previous.get("champion_version") == holder or (previous.get("promoted") and holder == version))):
            # the same candidate against the same champion: the earlier decision stands
            return self._result(run, model, previous, holder, reused=True)
        decision: dict[str, Any] = {
            "model": name, "candidate_version": version, "candidate_value": value, **same_question,
            "champion_version": holder, "champion_value": None, "pipeline": pipeline, "run_id": run_id,
        }
        if holder is None:
            decision.update(promoted=True, reason=f"no version holds {self.alias!r} yet")
        elif holder == version:
            decision.update(promoted=True, reason=f"version {version} already holds {self.alias!r}")
        else:
            champion = ws.models.get(name, holder)
            champ_value = self._metric((champion.extra or {}).get("metrics") or {}, f"champion version {holder}")
            decision["champion_value"] = champ_value
            gain = value - champ_value if self.direction == "max" else champ_value - value
            better = gain > self.margin
            verb = "beats" if better else "does not beat"
            decision.update(promoted=better, gain=gain, reason=(
                f"{self.metric} {value:.6g} {verb} champion v{holder} {champ_value:.6g} by more than {self.margin:g}"
                f" ({'higher' if self.direction == 'max' else 'lower'} is better)"))
        moved = decision["promoted"] and holder != version
        if moved:
            ws.models.set_alias(name, self.alias, version, reason=decision)
            self._announce(context, name, version)
        ws.models.record_decision(name, version, decision)
        self.log.info("%s %s v%s: %s", "promoted" if decision["promoted"] else "NOT promoted", name, version,
                      decision["reason"])
        return self._result(run, model, decision, version if decision["promoted"] else holder, reused=False)

    def _result(self, run: StepRun, model: dict, decision: dict, holder: int | None, reused: bool) -> dict:
        if reused:
            self.log.info("decision reused for %s v%s: %s", model["name"], model["version"], decision["reason"])
        metrics = {f"candidate_{self.metric}": decision["candidate_value"]}
        if decision.get("champion_value") is not None:
            metrics[f"champion_{self.metric}"] = decision["champion_value"]
        verdict = ("promoted to " if decision["promoted"] else "not promoted to ") + self.alias
        summary = {**model, "alias": self.alias, "alias_holder": holder, "decision": verdict}
        return run.finish(StepResult(self.task_id, reused, {}, metrics, model=summary, decision=decision))

    def _metric(self, metrics: Mapping[str, Any], what: str) -> float:
        values = _numeric(metrics)
        if self.metric not in values:
            raise DefinitionError(
                f"compare step {self.task_id!r}: {what} has no metric {self.metric!r} (it has: "
                f"{', '.join(sorted(values)) or 'none'}); log it with context.log_metric in a metrics_from step"
            )
        return float(values[self.metric])

    def _announce(self, context: Any, name: str, version: int) -> None:
        from airflow_mlpipe.assets import model_alias, model_asset

        if name != self.model_name:
            return  # the alias move is recorded; only a model declared at parse time has an Asset outlet
        context["outlet_events"][model_alias(name)].add(
            model_asset(name), extra={"alias": self.alias, "version": version}
        )
