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
from airflow_mlpipe.spec.names import VERSION_PARAM
from airflow_mlpipe.spec.params import RESERVED_PARAMS
from airflow_mlpipe.spec.pipeline import PipelineSpec
from airflow_mlpipe.spec.problems import Collector, did_you_mean, translate
from airflow_mlpipe.spec.refs import InputRef, RefError, find_refs, parse_input
from airflow_mlpipe.spec.steps import STEP_TYPES, StepBase
from airflow_mlpipe.spec.types import name_problem
from airflow_mlpipe.spec.values import describe

_SECTIONS = ("compute", "environments", "params")
_IMAGE_TARGETS = ("docker", "kubernetes")


@dataclass
class _Broken:
    """Names whose entry failed structural validation (still count as declared)."""

    names: dict[str, set] = field(default_factory=lambda: {s: set() for s in (*_SECTIONS, "steps")})
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
    """Validate everything but ``steps`` and report its errors; return the top level with what failed
    left out, or None when nothing sensible remains."""
    top = {k: v for k, v in data.items() if k != "steps"}
    top["steps"] = {}
    # "schedule: '@daily'" is shorthand for {cron: '@daily'}: report errors at "schedule"
    rewrite = {("schedule", "cron"): ("schedule",)} if isinstance(top.get("schedule"), str) else None
    try:
        return PipelineSpec.model_validate(top)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    report(PipelineSpec, errors, col, (), rewrite)
    return _revalidate_without_failures(top, errors, broken)


#: passes of :func:`_revalidate_without_failures` before it gives up
_REVALIDATE_PASSES = 3


def _revalidate_without_failures(top: dict, errors: list, broken: _Broken) -> PipelineSpec | None:
    """Validate the top level again without the parts that failed, so the semantic checks still see
    everything else; the failures themselves are already reported, and later passes report nothing.

    The first pass drops only the failing entry of a mapping (``params.x``, ``schedule.cron``) and any
    other failing field; each later pass drops the whole top-level fields that still fail. A dropped
    ``pipeline`` name is replaced by a placeholder. It gives up (None) at an error without a location
    (the top level as a whole is wrong) or when the last pass still fails. In ``broken`` it records, for
    compute, environments and params, the names of dropped entries under ``names`` (still declared, so a
    reference to one is not reported again) and under ``wildcard`` a section dropped whole or misspelled
    as an unknown top-level field ('parms'), where any name then counts as declared. ``top`` and its
    mappings are not modified."""
    cleaned = {k: (dict(v) if isinstance(v, dict) else v) for k, v in top.items()}
    for attempt in range(_REVALIDATE_PASSES):
        for err in errors:
            loc = tuple(err["loc"])
            if not loc:
                return None
            _drop_failed_field(cleaned, loc, err["type"], broken, entry_only=attempt == 0)
        cleaned.setdefault("pipeline", "invalid")
        try:
            return PipelineSpec.model_validate(cleaned)
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
    return None


def _drop_failed_field(cleaned: dict, loc: tuple, kind: str, broken: _Broken, entry_only: bool) -> None:
    """Remove from ``cleaned`` what the error of type ``kind`` at ``loc`` is about: with ``entry_only``
    and a mapping at ``loc[0]``, only its entry ``loc[1]`` (recorded in ``broken.names`` for the
    sections); otherwise the whole top-level field (a section becomes a wildcard). An unknown top-level
    field that looks like a misspelled section ('parms') makes that section a wildcard too, so every
    ``${params.X}`` is not also reported as unknown."""
    if len(loc) == 1 and kind == "extra_forbidden":
        hint = did_you_mean(loc[0], _SECTIONS)
        if hint:
            broken.wildcard.add(hint)
    if entry_only and len(loc) >= 2 and isinstance(cleaned.get(loc[0]), dict):
        if loc[0] in _SECTIONS:
            broken.names[loc[0]].add(loc[1])
        cleaned[loc[0]].pop(loc[1], None)
    else:
        if loc[0] in _SECTIONS:
            broken.wildcard.add(loc[0])
        cleaned.pop(loc[0], None)


def _validate_steps(raw: Any, col: Collector, broken: _Broken) -> dict[str, StepBase]:
    """Validate each step with the model of its type and report its errors; return the valid steps and,
    kept without their invalid fields, the steps :func:`_salvage` can rescue (recorded in
    ``broken.salvaged``). Every invalid step's name is recorded in ``broken.names``."""
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
    ``root``: the definitions folder every source directory must stay inside. The checks run in a
    fixed order, which is the order of problems reported on the same line."""
    known = _known_names(spec, broken)
    _check_names(spec, col)
    _check_params(spec, col)
    _check_defaults(spec, col, known)
    if base_dir is not None:
        _check_requirements_files(spec, col, base_dir)
    upstream, missing = _check_steps(spec, col, known, broken, base_dir, root)
    _check_missing_targets(missing, col)
    _check_cycles(spec, upstream, col)


def _known_names(spec: PipelineSpec, broken: _Broken) -> dict[str, set]:
    """The names a reference may use, per section: the valid entries plus those that failed structural
    validation (so a reference to a broken entry is not reported a second time); a section too broken
    to read contains every name."""
    known: dict[str, set] = {
        "compute": set(spec.compute) | broken.names["compute"],
        "environments": set(spec.environments) | broken.names["environments"],
        "params": set(spec.params) | broken.names["params"],
        "steps": set(spec.steps) | broken.names["steps"],
    }
    for section in broken.wildcard:
        known[section] = _Anything()
    return known


def _check_names(spec: PipelineSpec, col: Collector) -> None:
    """Every compute target, environment, param and step name is a valid name (see
    :func:`~airflow_mlpipe.spec.types.name_problem`), reported at the entry."""
    for section in (*_SECTIONS, "steps"):
        what = "compute target" if section == "compute" else section.rstrip("s")
        for name in getattr(spec, section):
            msg = name_problem(name, f"{what} name")
            if msg:
                col.add((section, name), msg)


def _check_params(spec: PipelineSpec, col: Collector) -> None:
    """No param takes a name the pipeline adds itself (``RESERVED_PARAMS``), and each param's declaration
    is consistent (its own ``declaration_problems``: default against type, choices...), param by param."""
    for name, param in spec.params.items():
        if name in RESERVED_PARAMS:
            who = ("the endpoint DAG picks the published version with it" if name == VERSION_PARAM
                   else "the pipeline adds this param itself")
            col.add(("params", name), f"'{name}' is reserved: {who}; pick another name")
        for fld, msg in param.declaration_problems():
            col.add(("params", name, fld), msg)


def _check_defaults(spec: PipelineSpec, col: Collector, known: dict[str, set]) -> None:
    """``defaults.compute`` and ``defaults.environment``, when set, name a declared compute target and
    environment."""
    for fld, section, what in (
        ("compute", "compute", "compute target"),
        ("environment", "environments", "environment"),
    ):
        value = getattr(spec.defaults, fld)
        if value is not None and value not in known[section]:
            col.add(("defaults", fld), f"unknown {what} {value!r}", did_you_mean(value, known[section]))


def _check_requirements_files(spec: PipelineSpec, col: Collector, base_dir: Path) -> None:
    """Every environment's ``requirements_file`` exists, relative to ``base_dir`` (the directory of the
    YAML file)."""
    for name, env in spec.environments.items():
        if env.requirements_file and not (base_dir / env.requirements_file).is_file():
            col.add(
                ("environments", name, "requirements_file"),
                f"requirements file '{env.requirements_file}' not found "
                f"(looked in {base_dir / env.requirements_file})",
            )


def _check_steps(
    spec: PipelineSpec,
    col: Collector,
    known: dict[str, set],
    broken: _Broken,
    base_dir: Path | None,
    root: Path | None,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Check each step in order: the common checks of :func:`_check_step`, then, for a step whose fields
    all validated (not salvaged), its type's own checks (files...). Return the upstream step names of
    each step (for the cycle check) and, per field ('compute', 'environment'), the steps that have none
    (reported together by :func:`_check_missing_targets`)."""
    registered: dict[str, tuple[str, str]] = {}  # dataset -> the (step, output) registering it first
    upstream: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    for name, step in spec.steps.items():
        upstream[name] = _check_step(spec, name, step, col, known, registered, broken, missing)
        if name not in broken.salvaged:
            for sub, msg in step.check(base_dir, root):
                col.add(("steps", name, *sub), msg)
    return upstream, missing


def _check_missing_targets(missing: dict[str, list[str]], col: Collector) -> None:
    """One problem per field ('compute', 'environment') for the steps that have neither their own value
    nor a default, reported at the first such step: a lone step is told to set it on the step or in
    ``defaults``, several (the first five named) to set the default."""
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


def _check_cycles(spec: PipelineSpec, upstream: dict[str, list[str]], col: Collector) -> None:
    """The steps form no cycle through inputs, ``after`` and type-specific step references; each cycle
    is reported once, at its first-written step."""
    for cycle in find_cycles(list(spec.steps), upstream):
        flow = " -> ".join(reversed(cycle))
        col.add(("steps", cycle[0]), f"the steps form a cycle: {flow} (through inputs and 'after')")


def _check_step(
    spec: PipelineSpec,
    name: str,
    step: StepBase,
    col: Collector,
    known: dict[str, set],
    registered: dict[str, tuple[str, str]],
    broken: _Broken,
    missing: dict[str, list[str]],
) -> list[str]:
    """Check one step; return its upstream step names (for the cycle check): the steps it reads an
    output of, then those it runs after."""
    if step.needs_compute:
        _check_compute_and_image(spec, name, step, col, known, missing)
    deps = _check_inputs(spec, name, step, col, known, broken)
    _check_outputs(name, step, col, registered)
    deps += _check_order(name, step, col, known)
    _check_templates(name, step, col, known, broken.salvaged.get(name, set()))
    return deps


def _check_compute_and_image(
    spec: PipelineSpec, name: str, step: StepBase, col: Collector, known: dict[str, set], missing: dict
) -> None:
    """The step's compute target and environment (its own or the default) are declared, and a container
    target (docker, kubernetes) gets an image from one of them. A step with neither its own value nor a
    default is added to ``missing`` instead of being reported here."""
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
            ("steps", name, "compute"),
            f"compute target '{cname}' ({target.type}) needs a container image: set compute.{cname}.image "
            f"or environments.{ename}.image",
        )


def _resolve(
    spec: PipelineSpec, name: str, step: StepBase, col: Collector, known: dict, fld: str, missing: dict
) -> Any:
    """The compute target or environment (``fld``) the step runs with: its own value, else the default.
    None when the step's own value is unknown (reported) or there is none (the step is added to
    ``missing[fld]``), or when it names an entry that failed validation."""
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


def _check_inputs(
    spec: PipelineSpec, name: str, step: StepBase, col: Collector, known: dict[str, set], broken: _Broken
) -> list[str]:
    """Each input has a valid name and a readable reference: a param of type dataset or path, or an
    output that another step declares (a step whose outputs failed validation is taken at its word).
    Return the steps whose outputs it reads, in the order of the inputs."""
    deps: list[str] = []
    for in_name, text in step.inputs.items():
        path = ("steps", name, "inputs", in_name)
        msg = name_problem(in_name, "input name")
        if msg:
            col.add(path, msg)
        try:
            ref = parse_input(text)
        except RefError as exc:
            col.add(path, str(exc))
            continue
        if ref.kind == "param":
            _check_param_input(spec, path, ref, col, known)
        elif ref.kind == "step_output":
            src = _check_step_output_input(spec, name, path, ref, col, known, broken)
            if src is not None:
                deps.append(src)
    return deps


def _check_param_input(
    spec: PipelineSpec, path: tuple, ref: InputRef, col: Collector, known: dict[str, set]
) -> None:
    """An input that reads a param (``${params.X}``) names a declared param of type dataset or path."""
    param = spec.params.get(ref.name)
    if ref.name not in known["params"]:
        col.add(path, f"unknown param '{ref.name}'", did_you_mean(ref.name, known["params"]))
    elif param is not None and param.type not in ("dataset", "path"):
        col.add(
            path,
            f"param '{ref.name}' is of type {param.type}: "
            "an input can only use a param of type dataset or path",
        )


def _check_step_output_input(
    spec: PipelineSpec,
    name: str,
    path: tuple,
    ref: InputRef,
    col: Collector,
    known: dict[str, set],
    broken: _Broken,
) -> str | None:
    """An input that reads a step's output names another, known step, and an output that step declares
    (unless its outputs failed validation). Return the source step when it is known and not the step
    itself, else None."""
    src = ref.step or ""
    if src == name:
        col.add(path, "a step cannot read its own output")
        return None
    if src not in known["steps"]:
        col.add(path, f"unknown step '{src}'", did_you_mean(src, known["steps"]))
        return None
    other = spec.steps.get(src)
    other_bad = broken.salvaged.get(src, ())
    if other is not None and "outputs" not in other_bad and ref.name not in other.outputs:
        outs = ", ".join(other.outputs) or "none"
        col.add(
            path,
            f"step '{src}' has no output '{ref.name}' (its outputs: {outs})",
            did_you_mean(ref.name, other.outputs),
        )
    return src


def _check_outputs(name: str, step: StepBase, col: Collector, registered: dict[str, tuple[str, str]]) -> None:
    """Each output has a valid name that is not also an input's, and a ``register_as`` dataset is
    registered by one output of the pipeline only: ``registered`` maps each dataset to the first
    (step, output) registering it, and later ones are reported."""
    for out_name, out in step.outputs.items():
        path = ("steps", name, "outputs", out_name)
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
                    f"dataset '{out.register_as}' is already registered by "
                    f"steps.{first[0]}.outputs.{first[1]}: each dataset has one producer per pipeline",
                )


def _check_order(name: str, step: StepBase, col: Collector, known: dict[str, set]) -> list[str]:
    """Each step named in ``after`` and in the type's own step references (``step_refs``: a compare
    step's ``candidate``...) is another, known step. Return the known ones, in that order."""
    deps: list[str] = []
    named = [(("after", i), other) for i, other in enumerate(step.after)]
    for sub, other in [*named, *step.step_refs()]:
        if other == name:
            col.add(("steps", name, *sub), "a step cannot run after itself")
        elif other not in known["steps"]:
            col.add(("steps", name, *sub), f"unknown step '{other}'", did_you_mean(other, known["steps"]))
        else:
            deps.append(other)
    return deps


def _check_templates(name: str, step: StepBase, col: Collector, known: dict[str, set], bad: set) -> None:
    """Every string of the step that may hold ``${...}`` references (``template_strings``) parses, and
    each reference is usable there (see :func:`_check_template`). ``bad``: the step's fields that failed
    validation, against which references are not checked."""
    for sub, text in step.template_strings():
        _check_template(name, step, ("steps", name, *sub), text, col, known, bad)


def _check_template(
    name: str, step: StepBase, path: tuple, text: str, col: Collector, known: dict[str, set], bad: set
) -> None:
    """One template string at ``path``: ``${params.X}`` names a known param, ``${inputs.X}`` and
    ``${outputs.X}`` a declared input or output of the step (unless that field is in ``bad``), and
    ``${steps...}`` is refused with how to declare it as an input instead."""
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
                    f"{ref.text} refers to an undeclared {ref.kind[:-1]}: "
                    f"declare it under steps.{name}.{ref.kind}",
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
    spec = PipelineSpec.model_validate({**{k: v for k, v in data.items() if k != "steps"}, "steps": steps})
    spec._source_file = source_file
    spec._lines = col.lines
    return spec
