"""Domain errors. Builtins (ValueError, TypeError) are for programming misuse; these are for
things a user or an operator of a pipeline can fix. Every message says what, where and what to do.

Every error is **permanent** or **transient** (the class attribute ``permanent``, which one instance may
override with ``permanent=``). A permanent error is one another attempt cannot fix: a refused conf, an
unknown dataset, a missing script, a failed validation, a step exit code the user marked permanent. The
operators fail such a task at once (``operators.common.fail_fast``: Airflow's ``AirflowFailException``,
no retry) and say what to change. A transient error (network, throttling, a lost race or lease, a killed
worker, an engine that does not answer) keeps Airflow's retries.

Standard library only: the step runtime (shipped into step images) imports this module.
"""

from __future__ import annotations


class MlpipeError(Exception):
    """Base class of every airflow-mlpipe domain error. Transient unless a subclass says otherwise."""

    #: True if another attempt cannot succeed without a change by the user (fail the task, no retry).
    permanent: bool = False

    def __init__(self, message: str = "", *, permanent: bool | None = None):
        super().__init__(message)
        if permanent is not None:
            self.permanent = permanent


class DefinitionError(MlpipeError):
    """A pipeline or step definition (YAML, or an operator's arguments) is invalid. ``problems`` lists every
    problem found."""

    permanent = True

    def __init__(self, message: str, problems: list | None = None, *, permanent: bool | None = None):
        super().__init__(message, permanent=permanent)
        self.problems = list(problems or [])


class ConfError(MlpipeError):
    """A ``dag_run.conf`` (or a param value) was refused before any step ran."""

    permanent = True


class InvalidReferenceError(ConfError, ValueError):
    """A dataset or model name, version or reference is malformed (``Name!``, ``name:0``...). Also a
    ValueError, for callers that catch the builtin."""


class WorkspaceError(MlpipeError):
    """The workspace or one of its datastores could not be used (transient: it may answer next time)."""


class NotFoundError(WorkspaceError):
    """A dataset, model, version, run or object does not exist (permanent: register it or fix the name)."""

    permanent = True


class ConflictError(WorkspaceError):
    """A conditional write lost a race (someone else created the key first). Transient: retry."""

    permanent = False


class StepFailed(MlpipeError):
    """A step's script exited non-zero. The message carries the tail of its log. Transient unless its exit
    code is one the step marks permanent (``permanent_exit_codes``)."""

    def __init__(self, message: str, exit_code: int | None = None, log_tail: str = "", *,
                 permanent: bool | None = None):
        super().__init__(message, permanent=permanent)
        self.exit_code = exit_code
        self.log_tail = log_tail


class ComputeError(MlpipeError):
    """A compute target could not start or watch a step (engine unreachable, pod lost...). Transient."""


class ComputeSetupError(ComputeError):
    """A compute target or environment is set up in a way no retry fixes (no image named, an image that is
    absent with pull 'never', an invalid mount, a missing client package or interpreter)."""

    permanent = True


def is_permanent(exc: BaseException) -> bool:
    """True for an MlpipeError another attempt cannot fix."""
    return isinstance(exc, MlpipeError) and bool(exc.permanent)
