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
from airflow_mlpipe.spec.types import name_problem
from airflow_mlpipe.spec.values import describe

_SECTIONS = ("compute", "environments", "params")
_IMAGE_TARGETS = ("docker", "kubernetes")


@dataclass
class _Broken:
    """Names whose entry failed structural validation (still count as declared)."""

    names: dict[str, set] = field(default_factory=lambda: {s: set() for s in (*_SECTIONS, "steps")})
    top: set = field(default_factory=set)
    #: steps with invalid fields, kept without them for the reference checks (no file checks)
    salvaged: dict = field(default_factory=dict)
    #: sections that could not be read at all: any name counts as declared there
    wildcard: set = field(default_factory=set)


class _Anything(frozenset):
    """A name set that contains every name (a section too broken to check references against)."""

    def __contains__(self, item: object) -> bool:
        return True


def report(
    model: type[BaseModel], errors: list, col: Collector, prefix: tuple = (), rewrite: dict | None = None
) -> None:
    """Add translated pydantic ``errors``. A missing field whose name is the "did you mean" of an
    unknown field beside it ('scirpt' for 'script') is one mistake: only the unknown field is reported."""
    translated = [(err, *translate(model, err, prefix)) for err in errors]
    typos = {
        (path[:-1], hint) for err, path, _, hint in translated if err["type"] == "extra_forbidden" and hint
    }
    for err, path, message, hint in translated:
        if err["type"] == "missing" and (path, err["loc"][-1]) in typos:
            continue
        path = (rewrite or {}).get(path, path)
        col.add(path, message, hint)


def _validate_top(data: dict, col: Collector, broken: _Broken) -> PipelineSpec | None:
    top = {k: v for k, v in data.items() if k != "steps"}
    top["steps"] = {}
    # "schedule: '@daily'" is shorthand for {cron: '@daily'}: report errors at "schedule"
    rewrite = {("schedule", "cron"): ("schedule",)} if isinstance(top.get("schedule"), str) else None
    try:
        return PipelineSpec.model_validate(top)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    report(PipelineSpec, errors, col, (), rewrite)
    # drop what failed, deepest first, so the semantic checks still see everything else
    cleaned = {k: (dict(v) if isinstance(v, dict) else v) for k, v in top.items()}
    for attempt in range(3):
        for err in errors:
            loc = tuple(err["loc"])
            if not loc:
                return None
            if len(loc) == 1 and err["type"] == "extra_forbidden":
                hint = did_you_mean(loc[0], _SECTIONS)
                if hint:  # "parms:" -> do not also report every ${params.X} as unknown
                    broken.wildcard.add(hint)
            if attempt == 0 and len(loc) >= 2 and isinstance(cleaned.get(loc[0]), dict):
                if loc[0] in _SECTIONS:
                    broken.names[loc[0]].add(loc[1])
                cleaned[loc[0]].pop(loc[1], None)
            else:
                if loc[0] in _SECTIONS:
                    broken.wildcard.add(loc[0])
                cleaned.pop(loc[0], None)
        if "pipeline" not in cleaned:
            cleaned["pipeline"] = "invalid"
        try:
            return PipelineSpec.model_validate(cleaned)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
    return None


def _validate_steps(raw: Any, col: Collector, broken: _Broken) -> dict[str, StepBase]:
    if raw is None or raw == {}:
        if ("steps",) in col.lines:
            col.add(("steps",), "no steps: a pipeline needs at least one step")
        else:
            col.add((), "missing required field 'steps': a pipeline needs at least one step")
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
            errors = exc.errors(include_url=False)
            report(model, errors, col, ("steps", name))
            bad_keys = {err["loc"][0] if err["loc"] else None for err in errors}
            broken.names["steps"].add(name)
            semi = _salvage(model, body, bad_keys)
            if semi is not None:
                steps[name] = semi
                broken.salvaged[name] = bad_keys
    return steps


def _salvage(model: type[StepBase], body: dict, bad_keys: set) -> StepBase | None:
    """The step without its invalid fields (required ones left unset), so its references can still
    be checked; None when nothing sensible remains."""
    if None in bad_keys:
        return None
    obj = model.model_construct()
    for key, value in body.items():
        if key in bad_keys or key not in model.model_fields:
            continue
        try:
            model.__pydantic_validator__.validate_assignment(obj, key, value)
        except ValidationError:
            return None
    return obj


def check_semantics(
    spec: PipelineSpec, col: Collector, broken: _Broken, base_dir: Path | None, root: Path | None = None
) -> None:
    """Names, references, graph and files. ``spec.steps`` holds only the structurally valid steps.
    ``root``: the definitions folder every source directory must stay inside."""
    known = {
        "compute": set(spec.compute) | broken.names["compute"],
        "environments": set(spec.environments) | broken.names["environments"],
        "params": set(spec.params) | broken.names["params"],
        "steps": set(spec.steps) | broken.names["steps"],
    }
    for section in broken.wildcard:
        known[section] = _Anything()
    complete = {n for n in spec.steps if n not in broken.salvaged}
    for section in (*_SECTIONS, "steps"):
        for name in getattr(spec, section):
            msg = name_problem(
                name, f"{section.rstrip('s') if section != 'compute' else 'compute target'} name"
            )
            if msg:
                col.add((section, name), msg)
    for name, param in spec.params.items():
        if name in RESERVED_PARAMS:
            col.add(
                ("params", name),
                f"'{name}' is reserved: the pipeline adds this param itself; pick another name",
            )
        for fld, msg in param.declaration_problems():
            col.add(("params", name, fld), msg)
    for fld, section, what in (
        ("compute", "compute", "compute target"),
        ("environment", "environments", "environment"),
    ):
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
    registered: dict[str, tuple[str, str]] = {}
    upstream: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}  # steps without a compute target / environment
    for name, step in spec.steps.items():
        upstream[name] = _check_step(spec, name, step, col, known, registered, broken, missing)
        if name in complete:
            for sub, msg in step.check(base_dir, root):
                col.add(("steps", name, *sub), msg)
    for fld, names in missing.items():
        what = "compute target" if fld == "compute" else "environment"
        if len(names) == 1:
            col.add(
                ("steps", names[0]),
                f"no {what} for step '{names[0]}': set steps.{names[0]}.{fld} or defaults.{fld}",
            )
        else:
            shown = ", ".join(f"'{n}'" for n in names[:5]) + (
                f" and {len(names) - 5} more" if len(names) > 5 else ""
            )
            col.add(
                ("steps", names[0]),
                f"no {what} for steps {shown}: set defaults.{fld} (or {fld} on each step)",
            )
    for cycle in find_cycles(list(spec.steps), upstream):
        flow = " -> ".join(reversed(cycle))
        col.add(("steps", cycle[0]), f"the steps form a cycle: {flow} (through inputs and 'after')")


def _resolve(
    spec: PipelineSpec, name: str, step: StepBase, col: Collector, known: dict, fld: str, missing: dict
) -> Any:
    section, what = ("compute", "compute target") if fld == "compute" else ("environments", "environment")
    own = getattr(step, fld)
    chosen = own or getattr(spec.defaults, fld)
    if own is not None and own not in known[section]:
        col.add(("steps", name, fld), f"unknown {what} {own!r}", did_you_mean(own, known[section]))
        return None
    if chosen is None:
        missing.setdefault(fld, []).append(name)
        return None
    return getattr(spec, section).get(chosen)


def _check_step(
    spec: PipelineSpec,
    name: str,
    step: StepBase,
    col: Collector,
    known: dict,
    registered: dict,
    broken: _Broken,
    missing: dict,
) -> list[str]:
    """Check one step; return its upstream step names (for the cycle check)."""
    base = ("steps", name)
    deps: list[str] = []
    if step.needs_compute:
        target = _resolve(spec, name, step, col, known, "compute", missing)
        env = _resolve(spec, name, step, col, known, "environment", missing)
        if (
            target is not None
            and target.type in _IMAGE_TARGETS
            and not target.image
            and env is not None
            and not env.image
        ):
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
                other_bad = broken.salvaged.get(src, ())
                if other is not None and "outputs" not in other_bad and ref.name not in other.outputs:
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
    named = [(("after", i), other) for i, other in enumerate(step.after)]
    for sub, other in [*named, *step.step_refs()]:
        if other == name:
            col.add((*base, *sub), "a step cannot run after itself")
        elif other not in known["steps"]:
            col.add((*base, *sub), f"unknown step '{other}'", did_you_mean(other, known["steps"]))
        else:
            deps.append(other)
    bad = broken.salvaged.get(name, set())
    for sub, text in step.template_strings():
        _check_template(spec, name, step, (*base, *sub), text, col, known, bad)
    return deps


def _check_template(
    spec: PipelineSpec,
    name: str,
    step: StepBase,
    path: tuple,
    text: str,
    col: Collector,
    known: dict,
    bad: set,
) -> None:
    try:
        refs = find_refs(text)
    except RefError as exc:
        col.add(path, str(exc))
        return
    for ref in refs:
        if ref.kind == "params" and ref.name not in known["params"]:
            col.add(
                path, f"unknown param '{ref.name}' in {ref.text}", did_you_mean(ref.name, known["params"])
            )
        elif ref.kind in ("inputs", "outputs") and ref.kind not in bad:
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
    data: Any, col: Collector, base_dir: Path | None, source_file: Path | None, root: Path | None = None
) -> PipelineSpec:
    """Validate loaded YAML ``data``; raise ``DefinitionError`` listing every problem of the file.
    ``root``: the definitions folder (see ``spec.api.definitions_root``); None checks no containment."""
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
        check_semantics(partial, col, broken, base_dir, root)
    col.raise_if_any()
    if broken.salvaged:  # pragma: no cover - salvaged steps always come with a reported problem
        col.raise_if_any()
    spec = PipelineSpec.model_validate({**{k: v for k, v in data.items() if k != "steps"}, "steps": steps})
    spec._source_file = source_file
    spec._lines = col.lines
    return spec
