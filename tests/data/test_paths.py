"""The data paths: a user cache directory (overridable), never the current directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pppml_jax.data import paths


def test_defaults_live_in_the_user_cache_not_the_current_directory(monkeypatch, tmp_path):
    for name in (paths.CACHE_ENV, paths.DATA_ROOT_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "pppml-jax"
    assert paths.data_root() == paths.cache_dir() / "data"
    assert paths.tfds_dir() == paths.data_root() / "tfds"
    assert Path.cwd() not in paths.data_root().parents


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.DATA_ROOT_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    assert paths.cache_dir() == tmp_path / "xdg" / "pppml-jax"
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "mine"))
    assert paths.data_root() == tmp_path / "mine" / "data"
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path / "root"))
    assert paths.tfds_dir() == tmp_path / "root" / "tfds"


def test_importing_paths_registers_no_tfds_builder():
    code = (
        "import sys, pppml_jax.data.paths as p; p.data_root(); "
        "print('tensorflow_datasets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
