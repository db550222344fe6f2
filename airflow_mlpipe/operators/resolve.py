"""What the step operator does before and after the script runs: resolve params and inputs, build the
cache key, check and register outputs. Kept apart from the operator class so it reads top-down."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from airflow_mlpipe.errors import (
    ConfError,
    DefinitionError,
    InvalidReferenceError,
    NotFoundError,
    StepFailed,
    WorkspaceError,
)
from airflow_mlpipe.spec.names import DEFAULT_DESTINATION


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


def _content_input(ws: Any, key: str, source: str, recorded: str | None = None) -> dict[str, Any] | None:
    """A committed output used as an input, identified by what its files really hold (None: no manifest).

    If the files still hold what their manifest says: kind ``dir`` and the manifest's digest. If not (a file
    changed, added or deleted since the commit): kind ``folder`` and the digest of the real files, so the key
    follows the bytes the step will read. ``recorded`` is the digest the producer recorded: a manifest with
    another digest (committed again by someone else) is named in ``source``, as is any change."""
    from airflow_mlpipe.workspace.manifest import check_output, content_manifest

    manifest, problems = check_output(ws.datastore, key)
    if manifest is None:
        return None
    if problems:
        inp = {"key": key, "kind": "folder", "digest": content_manifest(ws.datastore, key)["digest"]}
    else:
        inp = {"key": key, "kind": "dir", "digest": manifest["digest"]}
    if recorded is not None and manifest["digest"] != recorded:
        problems = [f"its manifest was rewritten: it holds digest {manifest['digest'][:12]}, "
                    f"the producer recorded {recorded[:12]}", *problems]
    return {**inp, "source": f"{source} ({'; '.join(problems)})" if problems else source}


def _digest_of_path(ws: Any, key: str, source: str) -> dict[str, Any]:
    """A workspace path as an input: a committed output (``_content_input``), a file (sha256 of its bytes) or a
    folder without manifest (kind ``folder``: the digest a manifest of its files would have)."""
    from airflow_mlpipe.workspace.manifest import content_manifest

    committed = _content_input(ws, key, source)
    if committed is not None:
        return committed
    if ws.datastore.exists(key):
        return {"key": key, "kind": "file", "digest": hashlib.sha256(ws.datastore.read_bytes(key)).hexdigest(),
                "source": source}
    try:
        digest = content_manifest(ws.datastore, key)["digest"]
    except NotFoundError as exc:
        raise NotFoundError(f"nothing at workspace path {key!r} ({ws.datastore.uri_for(key)})") from exc
    return {"key": key, "kind": "folder", "digest": digest, "source": source}


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
        else:
            task_id = op.step_task_ids.get(step, step)
            upstream = context["ti"].xcom_pull(task_ids=task_id)
            if not upstream or output not in (upstream.get("outputs") or {}):
                raise StepFailed(
                    f"input {name!r} of step {op.task_id!r}: upstream step {step!r} (task {task_id!r}) "
                    f"left no output {output!r}; did it run in this DAG run?"
                )
            out = upstream["outputs"][output]
        found = _content_input(ws, out["key"], f"{step}.{output}", out["digest"])
        if found is None:
            raise StepFailed(
                f"input {name!r} of step {op.task_id!r}: the output {output!r} of step {step!r} is gone from "
                f"{ws.datastore.uri_for(out['key'])} (no manifest); run {step!r} again (regenerate_outputs)"
            )
        return found
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
            try:
                return _digest_of_path(ws, key, f"params.{pname}={key}")
            except NotFoundError as exc:
                raise NotFoundError(f"input {name!r}: {exc}. Change param {pname!r} (its default or the run's "
                                    "conf) to a path that holds data, or upload the data there") from exc
        return resolve_registered(ws, name, str(value), f"params.{pname}=")
    return resolve_registered(ws, name, parsed.raw, "")


def resolve_registered(ws: Any, name: str, ref: str, prefix: str) -> dict[str, Any]:
    """A registered dataset or model version. An unknown or malformed reference is a permanent error whose
    message says what to change: the param value (``prefix`` names it) or the step's input."""
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
    from airflow_mlpipe.workspace.manifest import check_output

    _, problems = check_output(ws.datastore, version.key, version.digest)
    if problems:
        # Refused, not rehashed: a version is immutable, and its digest is what runs, lineage and the
        # registry's digest index say it holds. Using other bytes under its name would make all of them lie.
        raise WorkspaceError(  # permanent: no retry brings the registered bytes back
            f"input {name!r}: {version.kind[:-1]} {version.name!r} version {version.version} "
            f"({ws.datastore.uri_for(version.key)}) no longer holds what was registered: {'; '.join(problems)}. "
            "Restore its files, or register the data as a new version and use that",
            permanent=True,
        )
    return _version_input(version, f"{prefix}{ref}")


def runtime_identity() -> dict[str, str]:
    """The provider's version and the digest of the runtime shipped into the step (once per process)."""
    from airflow_mlpipe import __version__
    from airflow_mlpipe.runtime.bundle import bundle_digest

    return {"airflow_mlpipe": __version__, "bundle": bundle_digest()}


def destination(cfg: Mapping[str, Any], pipeline: str, run_id: str, step: str, output: str) -> str:
    """The workspace key of an output: its ``destination`` template (placeholders ``{pipeline}``,
    ``{run_id}``, ``{step}``, ``{output}``) filled in and checked to stay inside the workspace."""
    template = cfg.get("destination") or DEFAULT_DESTINATION
    try:
        key = template.format(pipeline=pipeline, run_id=safe_id(run_id), step=step, output=output)
    except (KeyError, IndexError, ValueError) as exc:
        raise DefinitionError(f"output {output!r} of step {step!r}: invalid destination {template!r} ({exc!r}); "
                              "use only the placeholders {pipeline}, {run_id}, {step} and {output}") from exc
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


def plan_step(op: Any, ws: Any, context: Any, params: Mapping[str, Any], pipeline: str, run_id: str,
              used_values: Mapping[str, Any], *, regenerate: bool = False) -> StepPlan:
    """Resolve inputs and arguments and build the cache key (docs/reuse.md "Key components"). The compute
    target is built here: it describes the environment as it really is (``identity``) and runs the step."""
    from airflow_mlpipe.compute import get_target
    from airflow_mlpipe.workspace.cache import cache_key

    for pname, ptype in op.param_types.items():
        if ptype == "path" and pname in params and params[pname] is not None:
            check_workspace_path(pname, params[pname])
    inputs = {name: resolve_input(op, ws, context, name, ref, params) for name, ref in sorted(op.inputs.items())}
    # git info: only if it runs; a forced recomputation rehashes every file (DESIGN.md section 5)
    snapshot = ws.snapshot(op.source_directory, hash_paths=op.hash_paths, git=False,
                           trust_cache=not regenerate and op.allow_reuse)
    check_script(op, snapshot)
    target = get_target(op.compute.get("type", "local"), op.compute)
    identity = target.identity(environment_request(op), lambda line: op.log.info("%s", line))
    run = {"id": run_id, "pipeline": pipeline, "step": op.step_name,
           "partition": str(op.partition or 0), "partitions": str(op.partitions or 1)}
    argv = argv_segments(op.arguments, params, run, set(op.inputs), set(op.outputs))
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


def step_request(op: Any, hook: Any, ws: Any, plan: StepPlan, pipeline: str, run_id: str, attempt: int,
                 held: Mapping[str, Any] | None = None) -> Any:
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
    fields["env"] = {**fields["env"], **hook.step_env()}
    timeout = op.execution_timeout.total_seconds() if op.execution_timeout else None
    return StepRequest(
        context=context,
        **fields,
        timeout=timeout,
        pipeline=pipeline,
        run_id=run_id,
        step=op.step_name,
        attempt=attempt,
    )
