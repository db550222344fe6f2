"""The suite's waits come from one setting: MLPIPE_TEST_TIMEOUT_FACTOR scales ``scaled(...)`` (what the
tests and fixtures wait with) and every ``pytest.mark.timeout``. Checked by running a test of this file in
a pytest subprocess with the factor set to 3."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TIMEOUT_FACTOR, scaled


@pytest.mark.timeout(5)
def test_the_factor_scales_waits_and_timeout_marks(request):
    assert scaled(2) == 2 * TIMEOUT_FACTOR
    assert request.node.get_closest_marker("timeout").args[0] == 5 * TIMEOUT_FACTOR


def test_ci_raises_every_timeout_with_one_variable():
    env = {**os.environ, "MLPIPE_TEST_TIMEOUT_FACTOR": "3"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_the_factor_scales_waits_and_timeout_marks"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=scaled(120),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
