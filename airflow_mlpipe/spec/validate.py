"""From loaded YAML data to a validated :class:`PipelineSpec`, collecting every problem of the file.

Structure errors (pydantic) are collected first, section by section, so one bad step or param does
not hide the others; the semantic checks (names, references, graph, files) then run on everything
that was structurally valid. Names of invalid entries stay "known", so a reference to a broken step
is not reported a second time as a reference to an unknown step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from airflow_mlpipe.spec.graph import find_cycles
from airflow_mlpipe.spec.params import RESERVED_PARAMS
from airflow_mlpipe.spec.pipeline import PipelineSpec
from airflow_mlpipe.spec.problems import Collector, did_you_mean, translate
from airflow_mlpipe.spec.refs import RefError, find_refs, parse_input
from airflow_mlpipe.spec.steps import STEP_TYPES, StepBase
from airflow_mlpipe.spec.types import describe, name_problem

_SECTIONS = ("compute", "environments", "params")
_IMAGE_TARGETS = ("docker", "kubernetes")


@dataclass
class _Broken:
    """Names whose entry failed structural validation (still count as declared)."""

    names: dict[str, set] = field(default_factory=lambda: {s: set() for s in (*_SECTIONS, "steps")})
    top: set = field(default_factory=set)


def _errors(model: type[BaseModel], data: Any, col: Collector, prefix: tuple = ()) -> list[tuple]:
    """Validate ``data``; report the errors; return their raw locs ([] when valid)."""
    try:
        model.model_validate(data)
    except ValidationError as exc:
        locs = []
        for err in exc.errors(include_url=False):
            path, message, hint = translate(model, err, prefix)
            col.add(path, message, hint)
            locs.append(tuple(err["loc"]))
        return locs
    return []


def _validate_top(data: dict, col: Collector, broken: _Broken) -> PipelineSpec | None:
    top = {k: v for k, v in data.items() if k != "steps"}
    top["steps"] = {}
    locs = _errors(PipelineSpec, top, col)
    if not locs:
        return PipelineSpec.model_validate(top)
    for loc in locs:
        if loc and loc[0] in _SECTIONS and len(loc) >= 2 and isinstance(top.get(loc[0]), dict):
            broken.names[loc[0]].add(loc[1])
        elif loc:
            broken.top.add(loc[0])
        else:
            return None
    cleaned = {k: v for k, v in top.items() if k not in broken.top}
    for section in _SECTIONS:
        if isinstance(cleaned.get(section), dict):
            cleaned[section] = {k: v for k, v in cleaned[section].items() if k not in broken.names[section]}
    if "pipeline" in broken.top or "pipeline" not in cleaned:
        cleaned["pipeline"] = "invalid"
    try:
        return PipelineSpec.model_validate(cleaned)
    except ValidationError:
        return None


def _validate_steps(raw: Any, col: Collector, broken: _Broken) -> dict[str, StepBase]:
    if raw is None:
        col.add(("steps",) if "steps" in (col.lines_keys()) else (), "missing required field 'steps': a pipeline needs at least one step")
        return {}
    if not isinstance(raw, dict):
        col.add(("steps",), f"expected a mapping of step names to steps, got {describe(raw)}")
        return {}
    steps: dict[str, StepBase] = {}
    for name, body in raw.items():
        if body is None:
            body = {}
        if not isinstance(body, dict):
            col.add(("steps", name), f"expected a mapping (the step's fields), got {describe(body)}")
            broken.names["steps"].add(name)
            continue
        kind = body.get("type", "python")
        model = STEP_TYPES.get(kind) if isinstance(kind, str) else None
        if model is None:
            col.add(
                ("steps", name, "type"),
                f"unknown step type {describe(kind)} (registered: {', '.join(STEP_TYPES)})",
                did_you_mean(kind, STEP_TYPES),
            )
            broken.names["steps"].add(name)
            continue
        try:
            steps[name] = model.model_validate(body)
        except ValidationError as exc:
            for err in exc.errors(include_url=False):
                path, message, hint = translate(model, err, ("steps", name))
                col.add(path, message, hint)
            broken.names["steps"].add(name)
    return steps


def check_semantics(spec: PipelineSpec, col: Collector, broken: _Broken, base_dir: Path | None) -> None:
    """Names, references, graph and files. ``spec.steps`` holds only the structurally valid steps."""
    known = {
        "compute": set(spec.compute) | broken.names["compute"],
        "environments": set(spec.environments) | broken.names["environments"],
        "params": set(spec.params) | broken.names["params"],
        "steps": set(spec.steps) | broken.names["steps"],
    }
    for section in (*_SECTIONS, "steps"):
        for name in getattr(spec, section):
            msg = name_problem(name, f"{section.rstrip('s') if section != 'compute' else 'compute target'} name")
            if msg:
                col.add((section, name), msg)
    for name, param in spec.params.items():
        if name in RESERVED_PARAMS:
            col.add(("params", name), f"'{name}' is reserved: the pipeline adds this param itself; pick another name")
        for fld, msg in param.declaration_problems():
            col.add(("params", name, fld), msg)
    for fld, section, what in (("compute", "compute", "compute target"), ("environment", "environments", "environment")):
        value = getattr(spec.defaults, fld)
        if value is not None and value not in known[section]:
            col.add(("defaults", fld), f"unknown {what} {value!r}", did_you_mean(value, known[section]))
    if base_dir is not None:
        for name, env in spec.environments.items():
            if env.requirements_file and not (base_dir / env.requirements_file).is_file():
                col.add(
                    ("environments", name, "requirements_file"),
                    f"requirements file '{env.requirements_file}' not found (looked in {base_dir / env.requirements_file})",
                )
    if not spec.steps and not broken.names["steps"] and "steps" in col.lines_keys():
        col.add(("steps",), "a pipeline needs at least one step")
    registered: dict[str, tuple[str, str]] = {}
    upstream: dict[str, list[str]] = {}
    for name, step in spec.steps.items():
        upstream[name] = _check_step(spec, name, step, col, known, registered)
        for sub, msg in step.check(base_dir):
            col.add(("steps", name, *sub), msg)
    for cycle in find_cycles(list(spec.steps), upstream):
        flow = " -> ".join(reversed(cycle))
        col.add(("steps", cycle[0]), f"the steps form a cycle: {flow} (through inputs and 'after')")


def _resolve(spec: PipelineSpec, name: str, step: StepBase, col: Collector, known: dict, fld: str) -> Any:
    section, what = ("compute", "compute target") if fld == "compute" else ("environments", "environment")
    own = getattr(step, fld)
    chosen = own or getattr(spec.defaults, fld)
    if own is not None and own not in known[section]:
        col.add(("steps", name, fld), f"unknown {what} {own!r}", did_you_mean(own, known[section]))
        return None
    if chosen is None:
        col.add(("steps", name), f"no {what} for step '{name}': set steps.{name}.{fld} or defaults.{fld}")
        return None
    return getattr(spec, section).get(chosen)


def _check_step(
    spec: PipelineSpec, name: str, step: StepBase, col: Collector, known: dict, registered: dict
) -> list[str]:
    """Check one step; return its upstream step names (for the cycle check)."""
    base = ("steps", name)
    deps: list[str] = []
    if step.needs_compute:
        target = _resolve(spec, name, step, col, known, "compute")
        env = _resolve(spec, name, step, col, known, "environment")
        if target is not None and target.type in _IMAGE_TARGETS and not target.image and env is not None and not env.image:
            cname = step.compute or spec.defaults.compute
            ename = step.environment or spec.defaults.environment
            col.add(
                (*base, "compute"),
                f"compute target '{cname}' ({target.type}) needs a container image: set compute.{cname}.image "
                f"or environments.{ename}.image",
            )
    for in_name, text in step.inputs.items():
        path = (*base, "inputs", in_name)
        msg = name_problem(in_name, "input name")
        if msg:
            col.add(path, msg)
        try:
            ref = parse_input(text)
        except RefError as exc:
            col.add(path, str(exc))
            continue
        if ref.kind == "param":
            param = spec.params.get(ref.name)
            if ref.name not in known["params"]:
                col.add(path, f"unknown param '{ref.name}'", did_you_mean(ref.name, known["params"]))
            elif param is not None and param.type not in ("dataset", "path"):
                col.add(
                    path,
                    f"param '{ref.name}' is of type {param.type}: an input can only use a param of type dataset or path",
                )
        elif ref.kind == "step_output":
            src = ref.step or ""
            if src == name:
                col.add(path, "a step cannot read its own output")
            elif src not in known["steps"]:
                col.add(path, f"unknown step '{src}'", did_you_mean(src, known["steps"]))
            else:
                deps.append(src)
                other = spec.steps.get(src)
                if other is not None and ref.name not in other.outputs:
                    outs = ", ".join(other.outputs) or "none"
                    col.add(
                        path,
                        f"step '{src}' has no output '{ref.name}' (its outputs: {outs})",
                        did_you_mean(ref.name, other.outputs),
                    )
    for out_name, out in step.outputs.items():
        path = (*base, "outputs", out_name)
        msg = name_problem(out_name, "output name")
        if msg:
            col.add(path, msg)
        if out_name in step.inputs:
            col.add(path, f"'{out_name}' is both an input and an output of step '{name}': rename one")
        if out.register_as:
            first = registered.setdefault(out.register_as, (name, out_name))
            if first != (name, out_name):
                col.add(
                    (*path, "register_as"),
                    f"dataset '{out.register_as}' is already registered by steps.{first[0]}.outputs.{first[1]}: "
                    "each dataset has one producer per pipeline",
                )
    for i, other in enumerate(step.after):
        if other == name:
            col.add((*base, "after", i), "a step cannot run after itself")
        elif other not in known["steps"]:
            col.add((*base, "after", i), f"unknown step '{other}'", did_you_mean(other, known["steps"]))
        else:
            deps.append(other)
    for sub, text in step.template_strings():
        _check_template(spec, name, step, (*base, *sub), text, col, known)
    return deps


def _check_template(
    spec: PipelineSpec, name: str, step: StepBase, path: tuple, text: str, col: Collector, known: dict
) -> None:
    try:
        refs = find_refs(text)
    except RefError as exc:
        col.add(path, str(exc))
        return
    for ref in refs:
        if ref.kind == "params" and ref.name not in known["params"]:
            col.add(path, f"unknown param '{ref.name}' in {ref.text}", did_you_mean(ref.name, known["params"]))
        elif ref.kind in ("inputs", "outputs"):
            declared = getattr(step, ref.kind)
            if ref.name not in declared:
                col.add(
                    path,
                    f"{ref.text} refers to an undeclared {ref.kind[:-1]}: declare it under steps.{name}.{ref.kind}",
                    did_you_mean(ref.name, declared),
                )
        elif ref.kind == "steps":
            col.add(
                path,
                f"{ref.text} cannot be used here: declare it as an input of step '{name}' "
                f"(inputs: {{{ref.name}: {ref.text}}}) and write ${{inputs.{ref.name}}}",
            )


def build_spec(
    data: Any, col: Collector, base_dir: Path | None, source_file: Path | None
) -> PipelineSpec:
    """Validate loaded YAML ``data``; raise ``DefinitionError`` listing every problem of the file."""
    if data is None:
        if not col.problems:
            col.add((), "the file is empty: a pipeline definition needs at least 'pipeline' and 'steps'")
        col.raise_if_any()
    if not isinstance(data, dict):
        col.add((), f"expected a mapping at the top level (pipeline, steps, ...), got {describe(data)}")
        col.raise_if_any()
    broken = _Broken()
    top = _validate_top(data, col, broken)
    steps = _validate_steps(data.get("steps"), col, broken)
    if top is not None:
        partial = top.model_copy(update={"steps": steps})
        check_semantics(partial, col, broken, base_dir)
    col.raise_if_any()
    spec = PipelineSpec.model_validate({**{k: v for k, v in data.items() if k != "steps"}, "steps": steps})
    spec._source_file = source_file
    spec._lines = col.lines
    return spec
