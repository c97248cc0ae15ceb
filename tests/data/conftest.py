"""Fixtures of the data tests."""

import pytest


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """A private data root (``PPPML_DATA_DIR``) so no test writes into the repository."""
    root = tmp_path / "data_root"
    monkeypatch.setenv("PPPML_DATA_DIR", str(root))
    return root
