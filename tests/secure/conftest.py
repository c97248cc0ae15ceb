"""Fixtures of the secure-aggregation tests (helpers live in ``_secure_helpers.py``)."""

from __future__ import annotations

import pytest
from _secure_helpers import BACKEND_CASES

import pppml_jax.secure as sec


@pytest.fixture(scope="session")
def aggregators():
    """One :class:`SecureAggregator` per case, created lazily and reused (keys are slow)."""
    made: dict[str, sec.SecureAggregator] = {}

    def get(case: str) -> sec.SecureAggregator:
        if case not in made:
            opts = dict(BACKEND_CASES[case])
            made[case] = sec.SecureAggregator(opts.pop("backend"), **opts)
        # Tests share the (slow) keys across test functions that reuse round indices: forget
        # the completed rounds (a real run never does this; see ReusedRoundError).
        made[case]._completed.clear()
        return made[case]

    return get
