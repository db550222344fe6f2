"""What the step operator does before and after the script runs: resolve params and inputs, build the
cache key, check and register outputs. Kept apart from the operator class so it reads top-down."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from airflow_mlpipe.errors import ConfError, NotFoundError, StepFailed

DEFAULT_DESTINATION = "outputs/{pipeline}/{run_id}/{step}/{output}"


@dataclasses.dataclass
class StepPlan:
    pipeline: str
    run_id: str
    step: str
    snapshot: Any
    env_hash: str
    argv: list[list[Any]]
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    components: dict[str, Any]
    key: str

    def attempt_prefix(self, attempt: int) -> str:
        from airflow_mlpipe.workspace.runs import attempt_prefix

        return attempt_prefix(self.pipeline, self.run_id, self.step, attempt)

    def result_key(self, attempt: int) -> str:
        return f"{self.attempt_prefix(attempt)}/result.json"


def safe_id(run_id: str) -> str:
    """``run_id`` as a workspace key segment (the workspace's own rule; imported lazily: parse time)."""
    from airflow_mlpipe.workspace.runs import safe_id as workspace_safe_id

    return workspace_safe_id(run_id)


def params_referenced(op: Any) -> list[str]:
    from airflow_mlpipe.spec.refs import find_refs

    names: set[str] = set()
    for value in [*op.arguments, *op.inputs.values()]:
        if isinstance(value, str):
            names.update(ref.name for ref in find_refs(value) if ref.kind == "params")
    return sorted(names)


def argv_segments(
    arguments: list[Any], params: Mapping[str, Any], run: Mapping[str, str], inputs: set[str], outputs: set[str]
) -> list[list[Any]]:
    """Each argument -> segments: literal text, ``{"input": X}`` or ``{"output": X}``. Values are inserted as
    data and never scanned again, so a conf value containing ``${...}`` or ``{{...}}`` stays literal."""
    from airflow_mlpipe.spec.refs import format_value, parse_template

    argv: list[list[Any]] = []
    for position, arg in enumerate(arguments):
        if not isinstance(arg, str):
            argv.append([format_value(arg)])
            continue
        segments: list[Any] = []
        for part in parse_template(arg):
            if isinstance(part, str):
                segments.append(part)
            elif part.kind == "params":
                if part.name not in params:
                    raise ConfError(f"arguments[{position}] references unknown param {part.name!r}")
                segments.append(format_value(params[part.name]))
            elif part.kind == "run" and part.name in run:
                segments.append(run[part.name])
            elif part.kind in ("inputs", "outputs") and part.name in (inputs if part.kind == "inputs" else outputs):
                segments.append({part.kind[:-1]: part.name})
            else:
                raise ConfError(f"arguments[{position}]: {part.expr} does not name a declared input, output, "
                                "param or run value of this step")
        merged: list[Any] = []
        for seg in segments:
            if isinstance(seg, str) and merged and isinstance(merged[-1], str):
                merged[-1] += seg
            elif seg != "":
                merged.append(seg)
        argv.append(merged or [""])
    return argv


def check_workspace_path(name: str, value: Any) -> str:
    """A ``path`` param value (or an output destination): its key inside the workspace, never outside it
    (the rules of ``spec/values.py``, which the trigger and the CLI apply too)."""
    from airflow_mlpipe.spec.values import workspace_key

    try:
        return workspace_key(value)
    except ValueError as exc:
        raise ConfError(f"param {name!r}: {exc}") from exc


def _digest_of_path(ws: Any, key: str) -> tuple[str, str]:
    """(kind, digest) of a workspace path: a committed output (its manifest digest), a file (sha256 of its
    bytes) or a folder without manifest (digest over its files' names and contents)."""
    from airflow_mlpipe.workspace.manifest import read_manifest

    manifest = read_manifest(ws.datastore, key)
    if manifest is not None:
        return "dir", manifest["digest"]
    if ws.datastore.exists(key):
        return "file", hashlib.sha256(ws.datastore.read_bytes(key)).hexdigest()
    entries = sorted(ws.datastore.list(key.rstrip("/") + "/"), key=lambda o: o.key)
    if not entries:
        raise NotFoundError(f"nothing at workspace path {key!r} ({ws.datastore.uri_for(key)})")
    outer = hashlib.sha256()
    for obj in entries:
        outer.update(obj.key[len(key) :].encode() + b"\0")
        outer.update(hashlib.sha256(ws.datastore.read_bytes(obj.key)).digest())
    return "dir", outer.hexdigest()


def _version_input(version: Any, source: str) -> dict[str, Any]:
    return {
        "key": version.key,
        "kind": "dir",
        "digest": version.digest,
        "source": source,
        "version": version.version,
        "name": version.name,
    }


def resolve_input(op: Any, ws: Any, context: Any, name: str, ref: str, params: Mapping[str, Any]) -> dict[str, Any]:
    from airflow_mlpipe.spec.refs import parse_input

    parsed = parse_input(ref)
    if parsed.kind == "step_output":
        step, output = parsed.step, parsed.name
        # The upstream step's record in the workspace holds its outputs (a local read, cheaper than an
        # XCom round trip through the API server); its XCom is the fallback.
        record = ws.runs.get_step(op.pipeline or op.dag_id, context["dag_run"].run_id, step)
        if record and record.get("status") == "succeeded" and output in (record.get("outputs") or {}):
            out = record["outputs"][output]
            return {"key": out["key"], "kind": "dir", "digest": out["digest"], "source": f"{step}.{output}"}
        task_id = op.step_task_ids.get(step, step)
        upstream = context["ti"].xcom_pull(task_ids=task_id)
        if not upstream or output not in (upstream.get("outputs") or {}):
            raise StepFailed(
                f"input {name!r} of step {op.task_id!r}: upstream step {step!r} (task {task_id!r}) "
                f"left no output {output!r}; did it run in this DAG run?"
            )
        out = upstream["outputs"][output]
        return {"key": out["key"], "kind": "dir", "digest": out["digest"], "source": f"{step}.{output}"}
    if parsed.kind == "param":
        pname = parsed.name
        value = params.get(pname)
        ptype = op.param_types.get(pname, "dataset")
        from airflow_mlpipe.spec.values import KIND_KEY, is_path_like, value_problem

        problem = value_problem(pname, value, {KIND_KEY: ptype}) if value is not None else (
            f"param {pname!r} has no value: give a registered dataset or a path inside the workspace")
        if problem:
            raise ConfError(f"input {name!r} of step {op.task_id!r}: {problem}")
        if ptype == "path" or is_path_like(value):
            key = check_workspace_path(pname, value)
            kind, digest = _digest_of_path(ws, key)
            return {"key": key, "kind": kind, "digest": digest, "source": f"params.{pname}={key}"}
        return resolve_registered(ws, name, str(value), f"params.{pname}=")
    return resolve_registered(ws, name, parsed.raw, "")


def resolve_registered(ws: Any, name: str, ref: str, prefix: str) -> dict[str, Any]:
    try:
        if ref.startswith("models:/"):
            version = ws.models.resolve_model_ref(ref)
        else:
            version = ws.datasets.resolve(ref)
    except NotFoundError as exc:
        raise NotFoundError(f"input {name!r}: {exc}") from exc
    return _version_input(version, f"{prefix}{ref}")


def plan_step(op: Any, ws: Any, context: Any, params: Mapping[str, Any], pipeline: str, run_id: str,
              used_values: Mapping[str, Any]) -> StepPlan:
    from airflow_mlpipe.compute.venvs import environment_hash
    from airflow_mlpipe.workspace.cache import cache_key

    for pname, ptype in op.param_types.items():
        if ptype == "path" and pname in params and params[pname] is not None:
            check_workspace_path(pname, params[pname])
    inputs = {name: resolve_input(op, ws, context, name, ref, params) for name, ref in sorted(op.inputs.items())}
    snapshot = ws.snapshot(op.source_directory, hash_paths=op.hash_paths, git=False)  # git info: only if it runs
    env_hash = environment_hash(op.environment)
    run = {"id": run_id, "pipeline": pipeline, "step": op.step_name,
           "partition": str(op.partition or 0), "partitions": str(op.partitions or 1)}
    argv = argv_segments(op.arguments, params, run, set(op.inputs), set(op.outputs))
    outputs = {}
    for oname, cfg in sorted(op.outputs.items()):
        template = cfg.get("destination") or DEFAULT_DESTINATION
        key = template.format(pipeline=pipeline, run_id=safe_id(run_id), step=op.step_name, output=oname)
        outputs[oname] = {"key": check_workspace_path(f"outputs.{oname}.destination", key),
                          "register_as": cfg.get("register_as")}
    components = {
        "step": {
            "script": op.script,
            "argv": argv,
            "inputs": sorted(op.inputs),
            "outputs": {k: v.get("register_as") for k, v in sorted(op.outputs.items())},
        },
        "snapshot": snapshot.sha256,
        "environment": env_hash,
        "params": dict(used_values),
        "inputs": {k: v["digest"] for k, v in inputs.items()},
    }
    return StepPlan(pipeline, run_id, op.step_name, snapshot, env_hash, argv, inputs, outputs, components,
                    cache_key(components))


def checked_outputs(ws: Any, plan: StepPlan, result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    from airflow_mlpipe.workspace.manifest import read_manifest

    produced = result.get("outputs") or {}
    checked = {}
    for name, out in plan.outputs.items():
        manifest = read_manifest(ws.datastore, out["key"])
        if manifest is None:
            raise StepFailed(f"output {name!r} has no manifest at {out['key']}: the step did not commit it")
        if produced.get(name, {}).get("digest") not in (None, manifest["digest"]):
            raise StepFailed(f"output {name!r}: manifest digest differs from what the step reported")
        checked[name] = {
            "key": out["key"],
            "uri": ws.datastore.uri_for(out["key"]),
            "digest": manifest["digest"],
            "size": manifest.get("size", 0),
            "files": len(manifest.get("files", {})),
        }
    return checked


def register_outputs(op: Any, ws: Any, context: Any, outputs: Mapping[str, Any], pipeline: str,
                     run_id: str) -> dict[str, int]:
    from airflow_mlpipe.assets import dataset_alias, dataset_asset

    registered: dict[str, int] = {}
    for oname, cfg in op.outputs.items():
        name = cfg.get("register_as")
        if not name:
            continue
        out = outputs[oname]
        before = set(ws.datasets.version_numbers(name))
        version = ws.datasets.register(
            name,
            out["key"],
            description=f"output {oname!r} of step {op.step_name!r} in pipeline {pipeline!r}",
            producing_run={"pipeline": pipeline, "run_id": run_id, "step": op.step_name, "output": oname,
                           "key": out["key"]},
        )
        registered[name] = version.version
        if version.version not in before:
            context["outlet_events"][dataset_alias(name)].add(
                dataset_asset(name), extra={"version": version.version, "digest": version.digest}
            )
            op.log.info("registered dataset %s version %s (%s)", name, version.version, version.digest[:12])
        else:
            op.log.info("dataset %s already holds this content as version %s", name, version.version)
    return registered


def run_doc(params: Mapping[str, Any], conf: Mapping[str, Any], context: Any) -> dict[str, Any]:
    dag_run = context["dag_run"]
    return {
        "params": {k: v for k, v in params.items()},
        "conf": dict(conf),
        "run_type": str(getattr(getattr(dag_run, "run_type", ""), "value", getattr(dag_run, "run_type", ""))),
        "logical_date": str(getattr(dag_run, "logical_date", "") or ""),
        "dag_id": getattr(dag_run, "dag_id", None),
    }


def xcom_value(step: str, reused: bool, key: str, origin: Any, outputs: Mapping[str, Any],
               metrics: Mapping[str, Any], registered: Mapping[str, int], ws: Any) -> dict[str, Any]:
    return {
        "step": step,
        "reused": reused,
        "cache_key": key,
        "reused_from": origin,
        "outputs": {k: {"key": v["key"], "uri": v.get("uri") or ws.datastore.uri_for(v["key"]),
                        "digest": v["digest"]} for k, v in outputs.items()},
        "metrics": dict(metrics),
        "registered": dict(registered),
    }


def step_request(op: Any, hook: Any, ws: Any, plan: StepPlan, pipeline: str, run_id: str, attempt: int) -> Any:
    """The launch context (docs/internals.md) and the compute request of one attempt."""
    from airflow_mlpipe.compute import StepRequest

    prefix = plan.attempt_prefix(attempt)
    context = {
        "format": 1,
        "workspace": ws.datastore.uri,
        "pipeline": pipeline,
        "run_id": run_id,
        "step": op.step_name,
        "attempt": attempt,
        "snapshot": {"key": plan.snapshot.key, "sha256": plan.snapshot.content_sha256},
        "script": op.script,
        "argv": plan.argv,
        "params": dict(plan.components["params"]),
        "inputs": {name: {"key": inp["key"], "kind": inp["kind"]} for name, inp in plan.inputs.items()},
        "outputs": {name: {"key": out["key"]} for name, out in plan.outputs.items()},
        "result_key": f"{prefix}/result.json",
        "kept_outputs_key": f"{prefix}/outputs",
        "tags": {},
    }
    env_cfg = op.environment
    env = {**{k: str(v) for k, v in (env_cfg.get("env") or {}).items()}, **op.env, **hook.step_env()}
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    return StepRequest(
        context=context,
        env=env,
        python=env_cfg.get("python") or "python3",
        requirements=list(env_cfg.get("requirements") or []),
        requirements_file=env_cfg.get("requirements_file"),
        image=op.compute.get("image") or env_cfg.get("image"),
        resources=dict(op.compute_resources or {}),
        timeout=timeout,
        pipeline=pipeline,
        run_id=run_id,
        step=op.step_name,
        attempt=attempt,
    )
