"""One execution of one step of one pipeline run, typed: what every mlpipe operator shares.

``StepRun.start(op, context)`` refuses a bad ``dag_run.conf``, opens the workspace and the run's record, and
holds the run's facts (pipeline, run id, attempt, params, regenerate switch). Its methods do what every step
does: resolve an input reference, find an upstream step's task, register outputs as dataset versions, and
finish with a :class:`StepResult`, the one shape of every step's XCom and (with the run's facts) of its step
record. The python step's own planning (cache key, launch request) is ``operators/resolve.py``, on a
``StepRun``.

The operators call it from ``execute`` only: nothing here runs at DAG parse time.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping
from typing import Any, Protocol

from airflow_mlpipe.errors import ConfError, InvalidReferenceError, NotFoundError, StepFailed, WorkspaceError
from airflow_mlpipe.spec.names import REGENERATE_PARAM

#: the input kinds a ``${params.X}`` reference can name (a param of another type names a dataset)
INPUT_PARAM_KINDS = ("dataset", "path")


class StepOutputRef(str):
    """``${steps.S.outputs.O}`` that also knows the operator of step S (``MlpipeStepOperator.output_ref``)."""

    task: Any = None


def wire_inputs(op: Any, inputs: Mapping[str, Any]) -> dict[str, str]:
    """An operator's ``inputs`` as reference strings. Each ``StepOutputRef`` also makes its step the operator's
    upstream and records the step's task in ``op.upstream_steps`` (``StepRun.upstream_task_id`` reads it)."""
    wired: dict[str, str] = {}
    for name, ref in inputs.items():
        task = getattr(ref, "task", None)
        if task is not None:
            op.upstream_steps[task.step_name] = task.task_id
            op.set_upstream(task)
        wired[name] = str(ref)
    return wired


class StepOperator(Protocol):
    """What a StepRun needs of the operator that runs it (every mlpipe operator has these)."""

    task_id: str
    dag_id: str
    pipeline: str | None
    mlpipe_conn_id: str

    @property
    def step_name(self) -> str: ...

    @property
    def dag(self) -> Any: ...

    @property
    def log(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What a step leaves, the same shape for every step type: its XCom (``xcom``) and the core of its step
    record (``StepRun.finish``). ``outputs`` maps an output name to ``{key, uri, digest}`` (more for a
    record: size, files); ``registered`` a dataset name to the version this step registered or found."""

    step: str
    reused: bool
    outputs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    registered: Mapping[str, int] = dataclasses.field(default_factory=dict)
    cache_key: str | None = None
    reused_from: Mapping[str, Any] | None = None
    model: Mapping[str, Any] | None = None
    decision: Mapping[str, Any] | None = None

    def xcom(self, uri_for: Any) -> dict[str, Any]:
        """The task's return value (docs/internals.md "Step XCom"); ``uri_for`` turns a key into a URI."""
        return {
            "step": self.step,
            "reused": self.reused,
            "cache_key": self.cache_key,
            "reused_from": dict(self.reused_from) if self.reused_from else None,
            "outputs": {name: {"key": out["key"], "uri": out.get("uri") or uri_for(out["key"]),
                               "digest": out["digest"]} for name, out in self.outputs.items()},
            "metrics": dict(self.metrics),
            "registered": dict(self.registered),
            "model": dict(self.model) if self.model is not None else None,
            "decision": dict(self.decision) if self.decision is not None else None,
        }


@dataclasses.dataclass
class StepRun:
    """One attempt of one step in one pipeline run (see the module docstring)."""

    op: StepOperator
    context: Any
    hook: Any
    ws: Any
    pipeline: str
    run_id: str
    attempt: int
    params: dict[str, Any]
    conf: dict[str, Any]
    regenerate: bool
    started: float

    @classmethod
    def start(cls, op: StepOperator, context: Any, *, strict_conf: bool = True, open_run: bool = True) -> StepRun:
        """Check the run's conf (before anything else: a refused conf runs nothing), open the workspace of
        ``op.mlpipe_conn_id`` and, with ``open_run``, the run's record (a step may be its run's first task)."""
        from airflow_mlpipe.hooks.workspace import MlpipeHook
        from airflow_mlpipe.operators.common import refuse_bad_conf

        dag_run = context["dag_run"]
        conf = dict(getattr(dag_run, "conf", None) or {})
        params = dict(context["params"])
        refuse_bad_conf(op, conf, unknown_keys=strict_conf)
        hook = MlpipeHook(op.mlpipe_conn_id)
        run = cls(
            op=op,
            context=context,
            hook=hook,
            ws=hook.get_workspace(),
            pipeline=op.pipeline or op.dag_id,
            run_id=dag_run.run_id,
            attempt=int(getattr(context.get("ti"), "try_number", None) or 1),
            params=params,
            conf=conf,
            regenerate=bool(params.get(REGENERATE_PARAM, conf.get(REGENERATE_PARAM, False))),
            started=time.time(),
        )
        if open_run:
            run.ws.runs.open_run(run.pipeline, run.run_id, run.run_doc())
        return run

    @classmethod
    def outside_airflow(cls, op: StepOperator, ws: Any, run_id: str, params: Mapping[str, Any] | None = None, *,
                        context: Any = None, hook: Any = None, attempt: int = 1) -> StepRun:
        """A StepRun without a running task (tests, benchmarks, tools that plan a step): no conf check, no
        run record; ``context`` needs what the methods called read (``ti`` for an XCom fallback)."""
        return cls(op=op, context=context or {}, hook=hook, ws=ws, pipeline=op.pipeline or op.dag_id,
                   run_id=run_id, attempt=attempt, params=dict(params or {}), conf={}, regenerate=False,
                   started=time.time())

    @property
    def step(self) -> str:
        return self.op.step_name

    @property
    def log(self) -> Any:
        return self.op.log

    def run_doc(self) -> dict[str, Any]:
        """The run record's facts (``runs/<pipeline>/<run_id>/run.json``)."""
        dag_run = self.context["dag_run"]
        run_type = getattr(dag_run, "run_type", "")
        return {
            "params": dict(self.params),
            "conf": dict(self.conf),
            "run_type": str(getattr(run_type, "value", run_type)),
            "logical_date": str(getattr(dag_run, "logical_date", "") or ""),
            "dag_id": getattr(dag_run, "dag_id", None),
        }

    # ------------------------------------------------------------------ the DAG around the step
    @functools.cached_property
    def declared(self) -> dict[str, dict[str, Any]]:
        """The DAG's params as ``{name: {"value", "schema"}}`` (``operators.common.declared_params``)."""
        from airflow_mlpipe.operators.common import declared_params

        return declared_params(self.dag)

    @property
    def dag(self) -> Any:
        """The operator's DAG (None for an operator built outside one, as in unit tests)."""
        has_dag = getattr(self.op, "has_dag", None)
        return self.op.dag if has_dag is None or has_dag() else None

    def param_kind(self, name: str) -> str:
        """The mlpipe type of param ``name`` of the DAG, as an input reference reads it: ``path`` or
        ``dataset`` (the factory marks the type in the param's schema; a hand-written DAG's param of any
        other type names a dataset)."""
        from airflow_mlpipe.spec.values import param_kind

        kind = param_kind((self.declared.get(name) or {}).get("schema"))
        return kind if kind in INPUT_PARAM_KINDS else "dataset"

    def upstream_task_id(self, step: str) -> str:
        """The task whose XCom holds step ``step``'s outputs: the one a ``output_ref`` named, else the task
        of the DAG whose step is ``step`` (a partitioned step's merge is ``<step>.merge``), else ``step``."""
        named = getattr(self.op, "upstream_steps", None) or {}
        if step in named:
            return named[step]
        tasks = getattr(self.dag, "task_dict", None) or {}
        if getattr(tasks.get(step), "step_name", None) == step:
            return step
        for task_id, task in tasks.items():
            if getattr(task, "step_name", None) == step:
                return task_id
        return step

    def upstream_result(self, step: str) -> dict[str, Any]:
        """Step ``step``'s XCom in this run (``{}`` if it left none)."""
        value = self.context["ti"].xcom_pull(task_ids=self.upstream_task_id(step))
        return value if isinstance(value, dict) else {}

    # ------------------------------------------------------------------ inputs
    def resolve_input(self, name: str, ref: str) -> dict[str, Any]:
        """Input ``name`` of this step: ``{key, kind, digest, source[, version, name]}``, identified by what
        its files hold (docs/reuse.md "What is checked before anything is reused")."""
        from airflow_mlpipe.spec.refs import parse_input

        parsed = parse_input(ref)
        if parsed.kind == "step_output":
            return self._step_output(name, parsed.step, parsed.name)
        if parsed.kind == "param":
            return self._param_input(name, parsed.name)
        return self.resolve_registered(name, parsed.raw, "")

    def _step_output(self, name: str, step: str, output: str) -> dict[str, Any]:
        # The upstream step's record in the workspace holds its outputs (a local read, cheaper than an XCom
        # round trip through the API server); its XCom is the fallback.
        record = self.ws.runs.get_step(self.pipeline, self.run_id, step)
        if record and record.get("status") == "succeeded" and output in (record.get("outputs") or {}):
            out = record["outputs"][output]
        else:
            upstream = self.upstream_result(step)
            if output not in (upstream.get("outputs") or {}):
                raise StepFailed(
                    f"input {name!r} of step {self.op.task_id!r}: upstream step {step!r} (task "
                    f"{self.upstream_task_id(step)!r}) left no output {output!r}; did it run in this DAG run?"
                )
            out = upstream["outputs"][output]
        found = content_input(self.ws, out["key"], f"{step}.{output}", out["digest"])
        if found is None:
            raise StepFailed(
                f"input {name!r} of step {self.op.task_id!r}: the output {output!r} of step {step!r} is gone from "
                f"{self.ws.datastore.uri_for(out['key'])} (no manifest); run {step!r} again (regenerate_outputs)"
            )
        return found

    def _param_input(self, name: str, pname: str) -> dict[str, Any]:
        from airflow_mlpipe.spec.values import KIND_KEY, is_path_like, value_problem

        value = self.params.get(pname)
        ptype = self.param_kind(pname)
        problem = value_problem(pname, value, {KIND_KEY: ptype}) if value is not None else (
            f"param {pname!r} has no value: give a registered dataset or a path inside the workspace")
        if problem:
            raise ConfError(f"input {name!r} of step {self.op.task_id!r}: {problem}")
        if ptype == "path" or is_path_like(value):
            key = check_workspace_path(pname, value)
            try:
                return digest_of_path(self.ws, key, f"params.{pname}={key}")
            except NotFoundError as exc:
                raise NotFoundError(f"input {name!r}: {exc}. Change param {pname!r} (its default or the run's "
                                    "conf) to a path that holds data, or upload the data there") from exc
        return self.resolve_registered(name, str(value), f"params.{pname}=")

    def resolve_registered(self, name: str, ref: str, prefix: str) -> dict[str, Any]:
        """A registered dataset or model version. An unknown or malformed reference is a permanent error whose
        message says what to change: the param value (``prefix`` names it) or the step's input."""
        ws = self.ws
        models = ref.startswith("models:/")
        where = f"param {prefix[len('params.'):-1]!r} (its default or the run's conf)" if prefix else f"input {name!r}"
        try:
            version = ws.models.resolve_model_ref(ref) if models else ws.datasets.resolve(ref)
        except NotFoundError as exc:
            todo = ("register the model or fix the reference" if models else
                    "give a registered dataset (name, name:N or name:latest) or register it with "
                    "`mlpipe datasets register NAME PATH`")
            raise NotFoundError(f"input {name!r}: {exc}. Change {where}: {todo}") from exc
        except InvalidReferenceError as exc:
            raise InvalidReferenceError(f"input {name!r}: {exc}. Change {where}: a dataset is name, name:N or "
                                        "name:latest; a model models:/NAME/N or models:/NAME@ALIAS") from exc
        from airflow_mlpipe.workspace.manifest import output_problems

        # the check a cache hit makes (the version's small _digest.json first, its manifest only in doubt)
        problems = output_problems(ws.datastore, version.key, version.digest)
        if problems:
            # Refused, not rehashed: a version is immutable, and its digest is what runs, lineage and the
            # registry's digest index say it holds. Using other bytes under its name would make all of them lie.
            raise WorkspaceError(  # permanent: no retry brings the registered bytes back
                f"input {name!r}: {version.kind[:-1]} {version.name!r} version {version.version} "
                f"({ws.datastore.uri_for(version.key)}) no longer holds what was registered: {'; '.join(problems)}. "
                "Restore its files, or register the data as a new version and use that",
                permanent=True,
            )
        return {"key": version.key, "kind": "dir", "digest": version.digest, "source": f"{prefix}{ref}",
                "version": version.version, "name": version.name}

    # ------------------------------------------------------------------ outputs
    def register_outputs(self, outputs_cfg: Mapping[str, Mapping[str, Any]],
                         outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        """Register each output with ``register_as`` as a dataset version; a new version is announced on the
        dataset's Asset alias (content a version already holds is not: nothing new to trigger on)."""
        from airflow_mlpipe.assets import dataset_alias, dataset_asset

        registered: dict[str, int] = {}
        for oname, cfg in outputs_cfg.items():
            name = cfg.get("register_as")
            if not name:
                continue
            out = outputs[oname]
            version = self.ws.datasets.register(
                name,
                out["key"],
                description=f"output {oname!r} of step {self.step!r} in pipeline {self.pipeline!r}",
                producing_run={"pipeline": self.pipeline, "run_id": self.run_id, "step": self.step, "output": oname,
                               "key": out["key"]},
            )
            registered[name] = version.version
            if version.is_new:
                self.context["outlet_events"][dataset_alias(name)].add(
                    dataset_asset(name), extra={"version": version.version, "digest": version.digest}
                )
                self.log.info("registered dataset %s version %s (%s)", name, version.version, version.digest[:12])
            else:
                self.log.info("dataset %s already holds this content as version %s", name, version.version)
        return registered

    # ------------------------------------------------------------------ the step record
    def record(self, **fields: Any) -> dict[str, Any]:
        """The step record's common head (step, pipeline, run id, attempt, started) with ``fields``."""
        return {"step": self.step, "pipeline": self.pipeline, "run_id": self.run_id, "attempt": self.attempt,
                "started": self.started, **fields}

    def write_record(self, record: Mapping[str, Any]) -> None:
        self.ws.runs.write_step(self.pipeline, self.run_id, self.step, dict(record))

    def finish(self, result: StepResult, **fields: Any) -> dict[str, Any]:
        """Write the succeeded step's record (the result, the run's facts and ``fields``) and return its XCom."""
        record = self.record(**fields)
        record.update(
            status="succeeded",
            finished=time.time(),
            reused=result.reused,
            reused_from=dict(result.reused_from) if result.reused_from else None,
            cache_key=result.cache_key,
            outputs={k: dict(v) for k, v in result.outputs.items()},
            metrics=dict(result.metrics),
            registered=dict(result.registered),
        )
        for name in ("model", "decision"):
            value = getattr(result, name)
            if value is not None:
                record[name] = dict(value)
        self.write_record(record)
        return result.xcom(self.ws.datastore.uri_for)


# ---------------------------------------------------------------------- what a workspace path holds
def check_workspace_path(name: str, value: Any) -> str:
    """A ``path`` param value (or an output destination): its key inside the workspace, never outside it
    (the rules of ``spec/values.py``, which the trigger and the CLI apply too)."""
    from airflow_mlpipe.spec.values import workspace_key

    try:
        return workspace_key(value)
    except ValueError as exc:
        raise ConfError(f"param {name!r}: {exc}") from exc


def content_input(ws: Any, key: str, source: str, recorded: str | None = None) -> dict[str, Any] | None:
    """A committed output used as an input, identified by what its files really hold (None: no manifest).

    If the files still hold what their manifest says: kind ``dir`` and the manifest's digest (read from the
    output's small ``_digest.json`` when it vouches for the files, else from the manifest: ``output_digest``).
    If not (a file changed, added or deleted since the commit): kind ``folder`` and the digest of the real
    files, so the key follows the bytes the step will read. ``recorded`` is the digest the producer recorded:
    a manifest with another digest (committed again by someone else) is named in ``source``, as is any change."""
    from airflow_mlpipe.workspace.digests import folder_digest
    from airflow_mlpipe.workspace.manifest import output_digest

    digest, problems = output_digest(ws.datastore, key)
    if digest is None:
        return None
    if problems:
        inp = {"key": key, "kind": "folder", "digest": folder_digest(ws.datastore, key)}
    else:
        inp = {"key": key, "kind": "dir", "digest": digest}
    if recorded is not None and digest != recorded:
        problems = [f"its manifest was rewritten: it holds digest {digest[:12]}, "
                    f"the producer recorded {recorded[:12]}", *problems]
    return {**inp, "source": f"{source} ({'; '.join(problems)})" if problems else source}


def digest_of_path(ws: Any, key: str, source: str) -> dict[str, Any]:
    """A workspace path as an input: a committed output (``content_input``), a file (sha256 of its bytes) or a
    folder without manifest (kind ``folder``: the digest a manifest of its files would have). A file or folder
    is hashed through the workspace's digest cache (``workspace/digests.py``): only files whose store signal
    changed since they were last hashed are read."""
    from airflow_mlpipe.workspace.digests import file_digest, folder_digest

    committed = content_input(ws, key, source)
    if committed is not None:
        return committed
    if ws.datastore.exists(key):
        return {"key": key, "kind": "file", "digest": file_digest(ws.datastore, key), "source": source}
    try:
        digest = folder_digest(ws.datastore, key)
    except NotFoundError as exc:
        raise NotFoundError(f"nothing at workspace path {key!r} ({ws.datastore.uri_for(key)})") from exc
    return {"key": key, "kind": "folder", "digest": digest, "source": source}
