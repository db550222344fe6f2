"""One source of truth for compute settings: every setting a compute target reads from its config can be written
in YAML (a field of the target's model in spec/compute.py), and every field of the model is read by the target.
Before, a docker target's ``cpus``/``memory`` were documented and ignored, and options the targets implement
(Kubernetes secrets and workspace PVC, local isolation, kill grace...) could not be set from YAML."""

from __future__ import annotations

import ast
import pathlib

import pytest

from airflow_mlpipe.spec.compute import COMPUTE_TYPES

COMPUTE = pathlib.Path(__file__).resolve().parents[2] / "airflow_mlpipe" / "compute"
# read through the environment or the step request rather than from config: the target's image comes from
# the environment when the compute target does not name one
NOT_READ_FROM_CONFIG = {"docker": {"image"}, "kubernetes": {"image"}}


def _config_keys(source: str) -> set[str]:
    """String keys the module reads from a ``config``: ``config.get("k")``, ``config["k"]``, the loop
    ``for key in ("a", "b"): config.get(key)`` and the comprehension ``{k: ...config.get(k) for k in (...)}``."""
    keys: set[str] = set()
    tree = ast.parse(source)
    loops: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.For, ast.comprehension)) and isinstance(node.target, ast.Name) \
                and isinstance(node.iter, (ast.Tuple, ast.List)):
            loops[node.target.id] = {e.value for e in node.iter.elts if isinstance(e, ast.Constant)}

    def is_config(expr: ast.AST) -> bool:
        return (isinstance(expr, ast.Name) and expr.id == "config") or (
            isinstance(expr, ast.Attribute) and expr.attr == "config")

    for node in ast.walk(tree):
        arg = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and is_config(node.func.value) and node.args:
            arg = node.args[0]
        elif isinstance(node, ast.Subscript) and is_config(node.value):
            arg = node.slice
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            keys.add(arg.value)
        elif isinstance(arg, ast.Name) and arg.id in loops:
            keys |= loops[arg.id]
    return keys


@pytest.mark.parametrize("target", sorted(COMPUTE_TYPES))
def test_every_setting_a_target_reads_is_a_yaml_field_and_back(target):
    read = _config_keys((COMPUTE / f"{target}.py").read_text())
    fields = set(COMPUTE_TYPES[target].model_fields) - {"type"}
    assert read - fields == set(), f"{target} reads settings YAML cannot set: {sorted(read - fields)}"
    unread = fields - read - NOT_READ_FROM_CONFIG.get(target, set())
    assert unread == set(), f"{target}: YAML fields the target ignores: {sorted(unread)}"


def test_docker_limits_come_from_the_target_unless_the_step_says():
    from airflow_mlpipe.compute import get_target
    from airflow_mlpipe.compute.base import StepRequest, parse_memory

    target = get_target("docker", {"type": "docker", "cpus": 1.5, "memory": "512m"})
    spec = target.container_spec(StepRequest(context={"step": "s"}, image="img"))
    assert spec["nano_cpus"] == 1_500_000_000 and spec["mem_limit"] == parse_memory("512m")
    spec = target.container_spec(StepRequest(context={"step": "s"}, image="img",
                                             resources={"cpu": 2, "memory": "1g"}))
    assert spec["nano_cpus"] == 2_000_000_000 and spec["mem_limit"] == parse_memory("1g")
