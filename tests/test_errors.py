"""Every error of the project is an MlpipeError marked permanent (fail the task at once) or transient
(Airflow retries it); the operators' ``fail_fast`` turns the permanent ones into AirflowFailException."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import airflow_mlpipe
from airflow_mlpipe import errors


def _all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_all_subclasses(sub)}
    return found


def _import_everything() -> None:
    for module in pkgutil.walk_packages(airflow_mlpipe.__path__, "airflow_mlpipe."):
        if module.name.startswith("airflow_mlpipe.cli.") or module.name.endswith("__main__"):
            continue
        importlib.import_module(module.name)


EXPECTED = {
    "DefinitionError": True, "ConfError": True, "InvalidReferenceError": True, "NotFoundError": True,
    "ComputeSetupError": True, "PipelineRunFailed": True,
    "WorkspaceError": False, "ConflictError": False, "StepFailed": False, "ComputeError": False,
    "StepTimedOut": False, "AirflowApiError": False,
}


def test_every_project_error_is_marked_permanent_or_transient():
    _import_everything()
    classes = {cls.__name__: cls for cls in _all_subclasses(errors.MlpipeError)}
    for name, permanent in EXPECTED.items():
        assert classes[name].permanent is permanent, name
    for cls in classes.values():
        assert isinstance(cls.permanent, bool), cls
    # a lost race (and so a lost lease, a ConflictError) is worth another attempt
    assert not errors.ConflictError("lost").permanent
    # an instance may say otherwise: a step exit code the user marked permanent
    assert errors.StepFailed("exit 2", exit_code=2, permanent=True).permanent
    assert errors.is_permanent(errors.NotFoundError("no dataset")) and not errors.is_permanent(ValueError("x"))
    assert isinstance(errors.InvalidReferenceError("bad name"), ValueError)


def test_fail_fast_fails_permanent_errors_and_lets_transient_ones_retry():
    from airflow_mlpipe.compat import AirflowFailException
    from airflow_mlpipe.operators.common import fail_fast

    class Op:
        @fail_fast
        def execute(self, context, exc=None):
            raise exc

    with pytest.raises(AirflowFailException, match=r"NotFoundError: dataset 'x' .* not retried") as failed:
        Op().execute({}, errors.NotFoundError("dataset 'x' is not registered"))
    assert isinstance(failed.value.__cause__, errors.NotFoundError)
    with pytest.raises(errors.ConflictError):
        Op().execute({}, errors.ConflictError("lost the race"))
    with pytest.raises(errors.StepFailed):
        Op().execute({}, errors.StepFailed("killed", exit_code=137))
