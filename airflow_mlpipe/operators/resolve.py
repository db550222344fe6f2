"""The python step's own planning, on a typed ``StepRun`` (``operators/steprun.py``): resolve its params
and inputs, build its cache key (``plan_step``), its launch request (``step_request``), claim its lease and
check its outputs. What every step type shares (inputs, registration, the record and XCom) is ``StepRun``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_mlpipe.errors import ConfError, DefinitionError, StepFailed
from airflow_mlpipe.operators.steprun import check_workspace_path
from airflow_mlpipe.spec.names import DEFAULT_DESTINATION

if TYPE_CHECKING:
    from airflow_mlpipe.operators.steprun import StepRun


@dataclasses.dataclass
class StepPlan:
    pipeline: str
    run_id: str
    step: str
    snapshot: Any
    env_hash: str  # short identity of components["environment"], for the log
    argv: list[list[Any]]
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    components: dict[str, Any]
    key: str
    target: Any = None  # the compute target that described itself for the key; it runs the step

    def attempt_prefix(self, attempt: int) -> str:
        from airflow_mlpipe.workspace.runs import attempt_prefix

        return attempt_prefix(self.pipeline, self.run_id, self.step, attempt)

    def result_key(self, attempt: int) -> str:
        return f"{self.attempt_prefix(attempt)}/result.json"


def params_referenced(op: Any) -> list[str]:
    """The params a step's arguments and inputs reference: part of its cache key (``spec.params_used``
    finds the same in a definition)."""
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


def runtime_identity() -> dict[str, str]:
    """The provider's version and the digest of the runtime shipped into the step (once per process)."""
    from airflow_mlpipe import __version__
    from airflow_mlpipe.runtime.bundle import bundle_digest

    return {"airflow_mlpipe": __version__, "bundle": bundle_digest()}


def destination(cfg: Mapping[str, Any], pipeline: str, run_id: str, step: str, output: str) -> str:
    """The workspace key of an output (``workspace.runs.output_key``: its ``destination`` template filled in),
    checked by the workspace path rules too. A bad template is a permanent DefinitionError."""
    from airflow_mlpipe.workspace.runs import output_key

    template = cfg.get("destination") or DEFAULT_DESTINATION
    try:
        key = output_key(template, pipeline, run_id, step, output)
    except ValueError as exc:
        raise DefinitionError(f"output {output!r} of step {step!r}: {exc}") from exc
    return check_workspace_path(f"outputs.{output}.destination", key)


def check_script(op: Any, snapshot: Any) -> None:
    """The step's script must be a file of its snapshot (a permanent error otherwise: no retry brings it)."""
    import posixpath

    script = posixpath.normpath(str(op.script).replace("\\", "/"))
    if script in snapshot.files:
        return
    near = sorted(f for f in snapshot.files if f.endswith(".py"))[:20]
    raise DefinitionError(
        f"step {op.task_id!r}: script {op.script!r} is not in its source directory {op.source_directory!r} "
        f"(or is excluded by .gitignore / .amlignore); python files there: {', '.join(near) or 'none'}. "
        "Fix the step's script or source_directory."
    )


def plan_step(run: StepRun, used_values: Mapping[str, Any]) -> StepPlan:
    """Resolve inputs and arguments and build the cache key (docs/reuse.md "Key components"). The compute
    target is built here: it describes the environment as it really is (``identity``) and runs the step."""
    from airflow_mlpipe.compute import get_target
    from airflow_mlpipe.workspace.cache import cache_key

    op, params, pipeline, run_id = run.op, run.params, run.pipeline, run.run_id
    for pname, value in params.items():
        if value is not None and run.param_kind(pname) == "path":
            check_workspace_path(pname, value)
    inputs = {name: run.resolve_input(name, ref) for name, ref in sorted(op.inputs.items())}
    # git info: only if it runs; a forced recomputation rehashes every file (DESIGN.md section 5)
    snapshot = run.ws.snapshot(op.source_directory, hash_paths=op.hash_paths, git=False,
                               trust_cache=not run.regenerate and op.allow_reuse)
    check_script(op, snapshot)
    target = get_target(op.compute.get("type", "local"), op.compute)
    identity = target.identity(environment_request(op), lambda line: op.log.info("%s", line))
    run_values = {"id": run_id, "pipeline": pipeline, "step": op.step_name,
                  "partition": str(op.partition or 0), "partitions": str(op.partitions or 1)}
    argv = argv_segments(op.arguments, params, run_values, set(op.inputs), set(op.outputs))
    outputs = {}
    for oname, cfg in sorted(op.outputs.items()):
        key = destination(cfg, pipeline, run_id, op.step_name, oname)
        outputs[oname] = {"key": key, "register_as": cfg.get("register_as")}
    components = {
        "step": {
            "name": op.step_name,  # the pipeline's name stays out: copies and versions share steps
            "script": op.script,
            "argv": argv,
            "inputs": sorted(op.inputs),
            "outputs": {k: v.get("register_as") for k, v in sorted(op.outputs.items())},
        },
        "snapshot": snapshot.sha256,
        "environment": identity["environment"],
        "compute": identity["compute"],
        "runtime": runtime_identity(),
        "params": dict(used_values),
        "inputs": {k: v["digest"] for k, v in inputs.items()},
    }
    env_hash = cache_key({"environment": identity["environment"], "compute": identity["compute"]})
    return StepPlan(pipeline, run_id, op.step_name, snapshot, env_hash, argv, inputs, outputs, components,
                    cache_key(components), target)


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


def _environment_fields(op: Any) -> dict[str, Any]:
    """The StepRequest fields that describe the step's environment (shared by both requests below)."""
    env_cfg = op.environment
    return {
        "env": {**{k: str(v) for k, v in (env_cfg.get("env") or {}).items()}, **op.env},
        "python": env_cfg.get("python") or "python3",
        "requirements": list(env_cfg.get("requirements") or []),
        "requirements_file": env_cfg.get("requirements_file"),
        "image": op.compute.get("image") or env_cfg.get("image"),
        "resources": dict(op.compute_resources or {}),
    }


def environment_request(op: Any) -> Any:
    """What ``ComputeTarget.identity`` describes: the step's environment, without the run's context and
    without the workspace credentials (they reach the workspace, not the result)."""
    from airflow_mlpipe.compute import StepRequest

    return StepRequest(context={"step": op.step_name}, step=op.step_name, **_environment_fields(op))


def claim_step(ws: Any, plan: StepPlan, attempt: int) -> dict[str, Any]:
    """Claim the step's lease for this attempt (``runtime/lease.py``): {key, token, heartbeat, ttl}.
    Raises LeaseLost when a newer attempt of the step already started (this one is stale)."""
    from airflow_mlpipe.runtime import lease
    from airflow_mlpipe.workspace.runs import run_prefix

    key = lease.lease_key(f"{run_prefix(plan.pipeline, plan.run_id)}/steps/{plan.step}")
    heartbeat, ttl = lease.settings()
    doc = lease.claim(ws.datastore, key, attempt)
    return {"key": key, "token": doc["token"], "heartbeat": heartbeat, "ttl": ttl}


def check_claim(ws: Any, held: Mapping[str, Any]) -> None:
    from airflow_mlpipe.runtime import lease

    lease.check(ws.datastore, held["key"], held["token"])


def abort_stale_uploads(ws: Any, plan: StepPlan, log: Any) -> None:
    """Abort the multipart uploads that an earlier, killed attempt left open under this step's outputs
    (S3; a local datastore has none). Called once this attempt holds the step's lease."""
    abort = getattr(ws.datastore, "abort_multipart_uploads", None)
    if abort is None:
        return
    for out in plan.outputs.values():
        aborted = abort(out["key"])
        if aborted:
            log.info("aborted %d multipart upload(s) left open under %s by an earlier attempt", aborted, out["key"])


def step_request(run: StepRun, plan: StepPlan, held: Mapping[str, Any] | None = None) -> Any:
    """The launch context (docs/internals.md) and the compute request of this attempt."""
    from airflow_mlpipe.compute import StepRequest

    op, ws, pipeline, run_id, attempt = run.op, run.ws, run.pipeline, run.run_id, run.attempt
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
        "inputs": {name: {"key": inp["key"], "kind": inp["kind"], "digest": inp["digest"]}
                   for name, inp in plan.inputs.items()},
        "outputs": {name: {"key": out["key"]} for name, out in plan.outputs.items()},
        "result_key": f"{prefix}/result.json",
        "kept_outputs_key": f"{prefix}/outputs",
        "tags": {},
    }
    if held:
        context["lease"] = {"key": held["key"], "token": held["token"], "ttl": held["ttl"]}
    fields = _environment_fields(op)
    fields["env"] = {**fields["env"], **run.hook.step_env()}
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    return StepRequest(
        context=context,
        **fields,
        credentials=run.hook.step_credentials(),
        timeout=timeout,
        pipeline=pipeline,
        run_id=run_id,
        step=op.step_name,
        attempt=attempt,
    )
