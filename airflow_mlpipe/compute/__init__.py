"""Compute targets (local subprocess, Docker Engine, Kubernetes pod) behind one interface.

Importing this package is cheap: the docker and kubernetes clients load only when a target runs.
"""

from __future__ import annotations

from airflow_mlpipe.compute.base import (
    ComputeTarget,
    StepRequest,
    StepTimedOut,
    get_target,
    register_target,
    target_types,
)

__all__ = ["ComputeTarget", "StepRequest", "StepTimedOut", "get_target", "register_target", "target_types"]
