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
from airflow_mlpipe.errors import DefinitionError, StepFailed
from airflow_mlpipe.operators import resolve
from airflow_mlpipe.operators.common import fail_fast
from airflow_mlpipe.operators.steprun import StepOutputRef, StepResult, StepRun, wire_inputs

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
        ``${steps.S.outputs.O}``, ``models:/NAME@alias``), or ``other_step.output_ref("O")``: another step
        operator's output, which also makes that operator this one's upstream (no ``>>`` to write). A
        ``${params.X}`` input is a workspace path if the DAG's param X says ``mlpipe_type: path`` (the factory
        marks it) or its value looks like a path, else a registered dataset. The params a step's arguments
        and inputs reference are part of its cache key.
    :param outputs: name -> ``{"destination": template, "register_as": dataset name}``.
    :param environment: ``{"python", "requirements", "requirements_file", "image", "env"}``: the fields of
        an ``environments:`` entry of the YAML format, checked by the same model when the operator is built.
    :param compute: ``{"type": "local"|"docker"|"kubernetes", ...}`` (default local): the fields of a
        ``compute:`` entry of the YAML format, checked by the same model when the operator is built
        (docs/yaml-reference.md), so a misspelt setting is an error, not a silent default.
    :param allow_reuse: reuse an identical earlier run (same script, snapshot, environment, params used and
        input contents). ``regenerate_outputs`` in the run's params or conf forces recomputation.
    :param hash_paths: globs limiting which files of the snapshot enter the cache key.
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
        from airflow_mlpipe.operators.settings import check_step_settings

        compute, environment = check_step_settings(self.task_id, compute, environment)
        self.script = script
        self.source_directory = source_directory
        self.arguments = list(arguments)
        #: step name -> task id of the steps whose outputs ``output_ref`` wired in (see ``StepRun``)
        self.upstream_steps: dict[str, str] = {}
        self.inputs = wire_inputs(self, inputs or {})
        self.outputs = {name: dict(cfg or {}) for name, cfg in (outputs or {}).items()}
        self.environment = dict(environment or {})
        self.compute = dict(compute)
        self.allow_reuse = allow_reuse
        self.hash_paths = list(hash_paths) if hash_paths else None
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

    def output_ref(self, output: str) -> StepOutputRef:
        """A reference to this step's output ``output`` for another step's ``inputs``: that step gets this one
        as its upstream, so a hand-written DAG writes the edge once::

            train = MlpipeStepOperator(task_id="train", ..., inputs={"data": prep.output_ref("table")})
        """
        if output not in self.outputs:
            raise DefinitionError(f"step {self.task_id!r} has no output {output!r} (its outputs: "
                                  f"{', '.join(sorted(self.outputs)) or 'none'}); declare it in its outputs")
        from airflow_mlpipe.spec.refs import find_refs

        ref = StepOutputRef(f"${{steps.{self.step_name}.outputs.{output}}}")
        try:
            find_refs(ref)
        except DefinitionError as exc:
            raise DefinitionError(f"step {self.task_id!r}: its name cannot be referenced by another step ({exc}); "
                                  "give it a task id of letters, digits, '_' and '-' (not in a task group)") from exc
        ref.task = self
        return ref

    # ------------------------------------------------------------------ execute
    @fail_fast
    def execute(self, context: Context) -> dict[str, Any]:
        run = StepRun.start(self, context, strict_conf=self.strict_conf)
        used = resolve.params_referenced(self)
        plan = resolve.plan_step(run, {name: run.params.get(name) for name in sorted(used)})
        self.log.info("step %s: snapshot %s, environment %s", self.step_name, plan.snapshot.sha256[:12], plan.env_hash[:12])
        for name, inp in plan.inputs.items():
            self.log.info("input %s <- %s (digest %s)", name, inp["source"], inp["digest"][:12])

        facts = {
            "components": plan.components,
            "inputs": plan.inputs,
            "snapshot": {"sha256": plan.snapshot.sha256, "git": plan.snapshot.git},
            "compute": self.compute.get("type", "local"),
        }
        if self.allow_reuse and not run.regenerate:
            entry = run.ws.cache.lookup(plan.key)
            if entry is not None:
                return self._reuse(run, entry, plan, facts)
            reasons = run.ws.cache.explain(run.pipeline, self.step_name, plan.components)
        else:
            reasons = ["allow_reuse is false"] if not self.allow_reuse else ["regenerate_outputs requested"]
        for reason in reasons:
            self.log.info("running step %s: %s", self.step_name, reason)
        from airflow_mlpipe.runtime.lease import LeaseLost  # a step that runs only: not on the reuse path
        from airflow_mlpipe.workspace.snapshot import git_info

        facts["snapshot"]["git"] = git_info(self.source_directory)
        facts["rerun_reasons"] = reasons
        held = resolve.claim_step(run.ws, plan, run.attempt)  # a newer try of this step makes this one stale
        resolve.abort_stale_uploads(run.ws, plan, self.log)
        running = run.record(cache_key=plan.key, status="running", reused=False, **facts)
        run.write_record(running)
        try:
            result = self._run(run, plan, held)
            resolve.check_claim(run.ws, held)  # never commit the cache entry of a stale attempt
        except LeaseLost:
            raise  # a newer attempt owns the step and its record now: leave both alone
        except BaseException as exc:
            run.write_record({**running, "status": "failed", "finished": time.time(), "error": str(exc)[-4000:]})
            raise
        outputs = resolve.checked_outputs(run.ws, plan, result)
        metrics = dict(result.get("metrics") or {})
        run.ws.cache.commit(plan.key, run.pipeline, self.step_name, plan.components, outputs, metrics,
                            {"pipeline": run.pipeline, "run_id": run.run_id, "step": self.step_name})
        registered = run.register_outputs(self.outputs, outputs)
        self.log.info("step %s succeeded in %.1fs; metrics %s", self.step_name, time.time() - run.started, metrics)
        return run.finish(
            StepResult(self.step_name, False, outputs, metrics, registered, cache_key=plan.key),
            **facts,
            metric_series=result.get("metric_series") or {},
            params_logged=result.get("params_logged") or {},
            tags=result.get("tags") or {},
        )

    def _reuse(self, run: StepRun, entry: Any, plan: Any, facts: dict[str, Any]) -> dict[str, Any]:
        origin = entry.run or {}
        self.log.info(
            "step %s reused: cache key %s matches run %s (nothing changed in script, snapshot, "
            "environment, params used or inputs)",
            self.step_name,
            plan.key[:12],
            origin.get("run_id"),
        )
        registered = run.register_outputs(self.outputs, entry.outputs)
        return run.finish(StepResult(self.step_name, True, entry.outputs, entry.metrics, registered,
                                     cache_key=plan.key, reused_from=origin), **facts)

    def _run(self, run: StepRun, plan: Any, held: dict) -> dict[str, Any]:
        from airflow_mlpipe.compute import get_target
        from airflow_mlpipe.runtime.lease import Heartbeat, LeaseLost

        ws, pipeline, attempt = run.ws, run.pipeline, run.attempt
        request = resolve.step_request(run, plan, held)
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
