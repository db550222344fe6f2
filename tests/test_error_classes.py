"""Every exception class of the package derives from MlpipeError, so each says whether another attempt can fix
it (``permanent``) and callers catch the project's failures with one class. Control flow that must not be caught
as an error (BaseException subclasses, private to their module) is the only exception."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import airflow_mlpipe
from airflow_mlpipe.errors import MlpipeError


def test_every_exception_class_is_an_mlpipe_error():
    offenders = []
    for info in pkgutil.walk_packages(airflow_mlpipe.__path__, prefix="airflow_mlpipe."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) and obj.__module__ == module.__name__ and issubclass(obj, BaseException)):
                continue
            if not issubclass(obj, Exception) and name.startswith("_"):
                continue  # private control flow (e.g. the launcher's _Terminated), never a reported failure
            if not issubclass(obj, MlpipeError):
                offenders.append(f"{module.__name__}.{name}({', '.join(b.__name__ for b in obj.__bases__)})")
    assert offenders == [], offenders
