"""Where pppml-jax keeps downloaded and built data (no TFDS import, no builder registration).

The cache directory is ``$PPPML_CACHE`` when set, else ``$XDG_CACHE_HOME/pppml-jax``, else
``~/.cache/pppml-jax``: never the current directory. Data lives under ``<cache>/data``
unless ``$PPPML_DATA_DIR`` names another root; built TFDS data sets go to
``<data root>/tfds`` and the prepared real chest CT to ``<data root>/real_ct``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "PPPML_CACHE"
"""Environment variable that overrides the cache directory."""

DATA_ROOT_ENV = "PPPML_DATA_DIR"
"""Environment variable that overrides the data root."""


def cache_dir() -> Path:
    """The user cache directory: ``$PPPML_CACHE``, ``$XDG_CACHE_HOME/pppml-jax`` or
    ``~/.cache/pppml-jax`` (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pppml-jax"


def data_root() -> Path:
    """Root of pppml-jax's data: ``$PPPML_DATA_DIR`` or ``<cache_dir()>/data``."""
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    return cache_dir() / "data"


def tfds_dir() -> Path:
    """Where TFDS writes built data sets by default: ``<data_root()>/tfds``."""
    return data_root() / "tfds"
