"""Domain errors. Builtins (ValueError, TypeError) are for programming misuse; these are for
things a user or an operator of a pipeline can fix. Every message says what, where and what to do."""

from __future__ import annotations


class MlpipeError(Exception):
    """Base class of every airflow-mlpipe domain error."""


class DefinitionError(MlpipeError):
    """A pipeline definition (YAML) is invalid. ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class ConfError(MlpipeError):
    """A ``dag_run.conf`` was refused before any step ran."""


class WorkspaceError(MlpipeError):
    """The workspace or one of its datastores could not be used."""


class NotFoundError(WorkspaceError):
    """A dataset, model, version, run or object does not exist."""


class ConflictError(WorkspaceError):
    """A conditional write lost a race (someone else created the key first)."""


class StepFailed(MlpipeError):
    """A step's script exited non-zero. The message carries the tail of its log."""

    def __init__(self, message: str, exit_code: int | None = None, log_tail: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.log_tail = log_tail


class ComputeError(MlpipeError):
    """A compute target could not start or watch a step (image missing, engine unreachable...)."""
