"""MlpipeStepOperator: run ``python <script> <arguments>`` from a snapshot, on a compute target, with
declared inputs and outputs, and reuse the result of an identical earlier run.

Usable by hand in any DAG (classic or TaskFlow style) and built by the YAML factory. The constructor only
stores its arguments; everything else happens in ``execute``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.compat import BaseOperator
from airflow_mlpipe.errors import StepFailed
from airflow_mlpipe.operators import resolve
from airflow_mlpipe.operators.common import fail_fast, refuse_bad_conf
from airflow_mlpipe.spec.names import REGENERATE_PARAM

if TYPE_CHECKING:
    from airflow_mlpipe.compat import Context

LOG_TAIL_LINES = 40


class MlpipeStepOperator(BaseOperator):
    """Run one ML step.

    :param script: the script to run, relative to ``source_directory``.
    :param source_directory: folder snapshotted into the workspace and used as working directory.
    :param arguments: argv list; strings may reference ``${params.X}``, ``${inputs.X}``, ``${outputs.X}``,
        ``${run.id}``. Jinja renders it first (templated field); our references are resolved after, so a
        value from ``dag_run.conf`` is never rendered twice and is always one argv element.
    :param inputs: name -> reference (``dataset``, ``dataset:3``, ``${params.X}``,
        ``${steps.S.outputs.O}``, ``models:/NAME@alias``).
    :param outputs: name -> ``{"destination": template, "register_as": dataset name}``.
    :param environment: ``{"python", "requirements", "requirements_file", "image", "env"}``.
    :param compute: ``{"type": "local"|"docker"|"kubernetes", ...}`` (default local).
    :param allow_reuse: reuse an identical earlier run (same script, snapshot, environment, params used and
        input contents). ``regenerate_outputs`` in the run's params or conf forces recomputation.
    :param hash_paths: globs limiting which files of the snapshot enter the cache key.
    :param params_used: params the step depends on (part of the cache key); default: those referenced.
    :param param_types: declared type per param (``dataset`` and ``path`` params resolve as inputs).
    :param step_task_ids: step name -> task id, for ``${steps.S.outputs.O}`` (default: same name).
    :param pipeline: name used in the workspace (default: the dag_id).
    :param env: extra environment variables of the step process (templated).
    :param partition: this task's share of a partitioned step (``${run.partition}``; set by ``.expand``).
    :param partitions: how many partitions there are (``${run.partitions}``).
    :param compute_resources: ``{"cpu", "memory", "gpu"}`` the compute target turns into limits or requests.
    :param strict_conf: refuse a ``dag_run.conf`` key that is not a declared param of the DAG (values are
        always checked: ``spec/values.py``). Serialized with the DAG: the API server plugin honours it.
    :param permanent_exit_codes: exit codes of the script that no retry can fix (e.g. ``[2]``, argparse's
        usage error): the task fails at once instead of being retried. Other codes, a killed step and the
        runtime's own failures keep Airflow's retries.
    :param mlpipe_conn_id: the ``mlpipe`` connection naming the workspace.
    """

    template_fields: Sequence[str] = ("arguments", "env")
    template_fields_renderers = {"arguments": "json", "env": "json"}
    ui_color = "#d8ecf7"

    @classmethod
    def get_serialized_fields(cls) -> frozenset[str]:
        """Airflow's fields plus ``strict_conf``, which the trigger-time check reads from the serialized DAG."""
        return frozenset(super().get_serialized_fields() | {"strict_conf"})

    def __init__(
        self,
        *,
        script: str,
        source_directory: str = ".",
        arguments: Sequence[Any] = (),
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, Mapping[str, Any] | None] | None = None,
        environment: Mapping[str, Any] | None = None,
        compute: Mapping[str, Any] | None = None,
        allow_reuse: bool = True,
        hash_paths: Sequence[str] | None = None,
        params_used: Sequence[str] | None = None,
        param_types: Mapping[str, str] | None = None,
        step_task_ids: Mapping[str, str] | None = None,
        pipeline: str | None = None,
        env: Mapping[str, str] | None = None,
        compute_resources: Mapping[str, Any] | None = None,
        partition: int | None = None,
        partitions: int | None = None,
        strict_conf: bool = True,
        permanent_exit_codes: Sequence[int] = (),
        mlpipe_conn_id: str = "mlpipe_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.script = script
        self.source_directory = source_directory
        self.arguments = list(arguments)
        self.inputs = dict(inputs or {})
        self.outputs = {name: dict(cfg or {}) for name, cfg in (outputs or {}).items()}
        self.environment = dict(environment or {})
        self.compute = dict(compute or {"type": "local"})
        self.allow_reuse = allow_reuse
        self.hash_paths = list(hash_paths) if hash_paths else None
        self.params_used = list(params_used) if params_used is not None else None
        self.param_types = dict(param_types or {})
        self.step_task_ids = dict(step_task_ids or {})
        self.pipeline = pipeline
        self.env = dict(env or {})
        self.compute_resources = dict(compute_resources or {})
        self.partition = partition
        self.partitions = partitions
        self.strict_conf = strict_conf
        self.permanent_exit_codes = sorted({int(code) for code in permanent_exit_codes})
        self.mlpipe_conn_id = mlpipe_conn_id
        self._target: Any = None
        # a plain flag, not a threading.Event: Airflow deep-copies operators (partial_subset, clearing) and a
        # lock cannot be copied; on_kill sets it from the signal handler, _run reads it after the step ends
        self._killed = False
        registered = [cfg["register_as"] for cfg in self.outputs.values() if cfg.get("register_as")]
        if registered:
            from airflow_mlpipe.assets import dataset_alias

            # New dataset versions are announced through an alias: a reused step that registers
            # nothing new emits no Asset event, so it triggers no pipeline scheduled on the dataset.
            self.outlets = [*self.outlets, *(dataset_alias(name) for name in registered)]

    @property
    def step_name(self) -> str:
        """The step's name in the workspace: the task id, plus ``-pN`` for partition N of a mapped step."""
        return self.task_id if self.partition is None else f"{self.task_id}-p{int(self.partition)}"

    # ------------------------------------------------------------------ execute
    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlpipe.hooks.workspace import MlpipeHook

        dag_run = context["dag_run"]
        conf = dict(getattr(dag_run, "conf", None) or {})
        params = dict(context["params"])
        refuse_bad_conf(self, conf, unknown_keys=self.strict_conf)
        hook = MlpipeHook(self.mlpipe_conn_id)
        ws = hook.get_workspace()
        pipeline = self.pipeline or self.dag_id
        run_id = dag_run.run_id
        attempt = int(context["ti"].try_number or 1)
        regenerate = bool(params.get(REGENERATE_PARAM, conf.get(REGENERATE_PARAM, False)))
        used = self.params_used if self.params_used is not None else resolve.params_referenced(self)
        used_values = {name: params.get(name) for name in sorted(used)}

        ws.runs.open_run(pipeline, run_id, resolve.run_doc(params, conf, context))
        started = time.time()
        plan = resolve.plan_step(self, ws, context, params, pipeline, run_id, used_values, regenerate=regenerate)
        self.log.info("step %s: snapshot %s, environment %s", self.step_name, plan.snapshot.sha256[:12], plan.env_hash[:12])
        for name, inp in plan.inputs.items():
            self.log.info("input %s <- %s (digest %s)", name, inp["source"], inp["digest"][:12])

        record = {
            "step": self.step_name,
            "pipeline": pipeline,
            "run_id": run_id,
            "attempt": attempt,
            "cache_key": plan.key,
            "components": plan.components,
            "inputs": plan.inputs,
            "snapshot": {"sha256": plan.snapshot.sha256, "git": plan.snapshot.git},
            "compute": self.compute.get("type", "local"),
            "started": started,
        }
        if self.allow_reuse and not regenerate:
            entry = ws.cache.lookup(plan.key)
            if entry is not None:
                return self._reuse(ws, context, entry, plan, record, pipeline, run_id)
            reasons = ws.cache.explain(pipeline, self.step_name, plan.components)
        else:
            reasons = ["allow_reuse is false"] if not self.allow_reuse else ["regenerate_outputs requested"]
        for reason in reasons:
            self.log.info("running step %s: %s", self.step_name, reason)
        from airflow_mlpipe.runtime.lease import LeaseLost  # a step that runs only: not on the reuse path
        from airflow_mlpipe.workspace.snapshot import git_info

        record["snapshot"]["git"] = git_info(self.source_directory)
        record.update(status="running", reused=False, rerun_reasons=reasons)
        held = resolve.claim_step(ws, plan, attempt)  # a newer try of this step makes this one stale
        resolve.abort_stale_uploads(ws, plan, self.log)
        ws.runs.write_step(pipeline, run_id, self.step_name, record)
        try:
            result = self._run(hook, ws, plan, pipeline, run_id, attempt, held)
            resolve.check_claim(ws, held)  # never commit the cache entry of a stale attempt
        except LeaseLost:
            raise  # a newer attempt owns the step and its record now: leave both alone
        except BaseException as exc:
            record.update(status="failed", finished=time.time(), error=str(exc)[-4000:])
            ws.runs.write_step(pipeline, run_id, self.step_name, record)
            raise
        outputs = resolve.checked_outputs(ws, plan, result)
        metrics = dict(result.get("metrics") or {})
        ws.cache.commit(
            plan.key,
            pipeline,
            self.step_name,
            plan.components,
            outputs,
            metrics,
            {"pipeline": pipeline, "run_id": run_id, "step": self.step_name},
        )
        registered = resolve.register_outputs(self, ws, context, outputs, pipeline, run_id)
        record.update(
            status="succeeded",
            finished=time.time(),
            outputs=outputs,
            metrics=metrics,
            metric_series=result.get("metric_series") or {},
            params_logged=result.get("params_logged") or {},
            tags=result.get("tags") or {},
            registered=registered,
        )
        ws.runs.write_step(pipeline, run_id, self.step_name, record)
        self.log.info("step %s succeeded in %.1fs; metrics %s", self.step_name, time.time() - started, metrics)
        return resolve.xcom_value(self.step_name, False, plan.key, None, outputs, metrics, registered, ws)

    def _reuse(self, ws, context, entry, plan, record, pipeline, run_id) -> dict[str, Any]:
        origin = entry.run or {}
        self.log.info(
            "step %s reused: cache key %s matches run %s (nothing changed in script, snapshot, "
            "environment, params used or inputs)",
            self.step_name,
            plan.key[:12],
            origin.get("run_id"),
        )
        registered = resolve.register_outputs(self, ws, context, entry.outputs, pipeline, run_id)
        record.update(
            status="succeeded",
            reused=True,
            reused_from=origin,
            finished=time.time(),
            outputs=entry.outputs,
            metrics=entry.metrics,
            registered=registered,
        )
        ws.runs.write_step(pipeline, run_id, self.step_name, record)
        return resolve.xcom_value(
            self.step_name, True, plan.key, origin, entry.outputs, entry.metrics, registered, ws
        )

    def _run(self, hook, ws, plan, pipeline: str, run_id: str, attempt: int, held: dict) -> dict[str, Any]:
        from airflow_mlpipe.compute import get_target
        from airflow_mlpipe.runtime.lease import Heartbeat, LeaseLost

        request = resolve.step_request(self, hook, ws, plan, pipeline, run_id, attempt, held)
        self._target = plan.target or get_target(self.compute.get("type", "local"), self.compute)
        tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        target = self._target

        def on_log(line: str) -> None:
            tail.append(line)
            self.log.info("%s", line)

        def on_lost(reason: str) -> None:
            self.log.error("step %s: %s; stopping it", self.step_name, reason)
            target.kill()

        heartbeat = Heartbeat(ws.datastore, held["key"], held["token"], held["heartbeat"], on_lost).start()
        try:
            code = self._target.run(request, on_log)
        except BaseException:
            # A task timeout (raised in this thread) or any failure: never leave the process behind.
            self._target.kill()
            raise
        finally:
            heartbeat.stop()
        if heartbeat.lost:
            raise LeaseLost(f"step {self.step_name!r}: {heartbeat.lost}; this attempt committed nothing")
        if self._killed:
            raise StepFailed(f"step {self.step_name!r} was killed; no output was committed", exit_code=code)
        if code != 0:
            log_tail = "\n".join(tail)
            permanent = self._permanent_exit(ws, plan, attempt, code)
            what = (f" Exit code {code} is in permanent_exit_codes {self.permanent_exit_codes} of the step: fix its "
                    "arguments, params or inputs (see the log) and trigger again." if permanent else "")
            raise StepFailed(
                f"step {self.step_name!r} of pipeline {pipeline!r}: {self.script} exited with code {code}.{what} "
                f"Last {len(tail)} log lines:\n{log_tail}",
                exit_code=code,
                log_tail=log_tail,
                permanent=permanent,
            )
        result = ws.datastore.get_json(plan.result_key(attempt))
        if not result or result.get("status") != "succeeded":
            raise StepFailed(
                f"step {self.step_name!r}: the script exited 0 but the runtime wrote no successful result "
                f"at {plan.result_key(attempt)}; see the log above",
                exit_code=code,
            )
        return result

    def _permanent_exit(self, ws: Any, plan: Any, attempt: int, code: int) -> bool:
        """True if ``code`` is marked permanent and the script itself exited with it (the runtime's result
        says phase "script"): the runtime's own failures (exit 2, phase prepare/commit) stay transient."""
        if code not in self.permanent_exit_codes:
            return False
        from airflow_mlpipe.errors import WorkspaceError

        try:
            result = ws.datastore.get_json_or_none(plan.result_key(attempt))
        except WorkspaceError:  # no readable result: not provably the script's own exit
            return False
        return isinstance(result, dict) and result.get("phase") == "script" and result.get("exit_code") == code

    def on_kill(self) -> None:
        self._killed = True
        if self._target is not None:
            self._target.kill()
