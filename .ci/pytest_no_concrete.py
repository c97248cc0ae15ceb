"""pytest plugin for environments without concrete-python (numpy 2: ``make test-latest``).

A test that fails because the concrete backend cannot be imported (``BackendUnavailableError``
naming concrete, or ``ModuleNotFoundError`` for ``concrete``, anywhere in the exception
chain) is reported as skipped with that reason; every other failure stays a failure. Load
it with ``PYTHONPATH=.ci pytest -p pytest_no_concrete``.
"""

from __future__ import annotations

import pytest

REASON = "concrete-python is not installed (it needs numpy < 2)"


def _missing_concrete(error: BaseException | None) -> bool:
    seen = 0
    while error is not None and seen < 10:
        name = type(error).__name__
        if name == "BackendUnavailableError" and "concrete" in str(error):
            return True
        if isinstance(error, ModuleNotFoundError) and (error.name or "").startswith("concrete"):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.excinfo is not None and _missing_concrete(call.excinfo.value):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {REASON}")
