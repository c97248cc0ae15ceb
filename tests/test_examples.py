"""The scripts in examples/ run as written and compute what they claim."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str) -> dict:
    """Runs ``examples/<name>`` as ``__main__`` and returns the ``summary`` it computed."""
    namespace = runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return namespace["summary"]


def test_every_example_is_tested():
    tested = {"pure_steps.py", "federation_run.py", "secure_aggregation.py", "idlg_attack.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_pure_steps_vmap_equals_loop_and_personalization_helps(capsys):
    summary = run_example("pure_steps.py")
    assert summary["vmap_vs_loop_max_abs"] < 1e-5
    assert summary["test_loss_personal"] < summary["test_loss_global"]
    assert "after personalize" in capsys.readouterr().out


def test_federation_run_evaluates_global_and_personalized_models(capsys):
    summary = run_example("federation_run.py")
    assert summary["rounds"] == 8
    for key in ("mean_global", "mean_personalized"):
        assert 0.6 < summary[key] <= 1.0  # far above chance (0.5) on this separable task
    assert "personalized model" in capsys.readouterr().out


def test_secure_aggregate_equals_the_numpy_weighted_mean(capsys):
    summary = run_example("secure_aggregation.py")
    assert "plain" in summary
    for backend, row in summary.items():
        assert row["max_abs_error"] < 1e-6, backend
        assert row["messages"] >= 3 and row["bytes_per_param"] > 0 and row["clipped"] == 0
    assert "numpy weighted mean" in capsys.readouterr().out


def test_idlg_recovers_label_and_image(capsys):
    summary = run_example("idlg_attack.py")
    assert summary["inferred_label"] == summary["idlg_label"] == summary["true_label"]
    assert summary["psnr_db"] > 30.0
    assert "PSNR" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_examples_have_a_docstring_saying_how_to_run_them(name):
    text = (EXAMPLES / name).read_text()
    assert text.startswith('"""') and f"python examples/{name}" in text


def test_package_ships_its_type_hints():
    """PEP 561: ``pppml_jax/py.typed`` exists and is package data."""
    root = EXAMPLES.parent
    assert (root / "pppml_jax" / "py.typed").is_file()
    assert 'pppml_jax = ["py.typed"]' in (root / "pyproject.toml").read_text()


def test_readme_python_snippet_runs_as_written(capsys):
    """The README's short version executes unchanged and its numbers are what it says."""
    text = (EXAMPLES.parent / "README.md").read_text()
    start = text.index("The short version (runs as written):")
    block = text[
        text.index("```python", start) + len("```python") : text.index("```\n", start + 40)
    ]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    res, updates = namespace["res"], namespace["updates"]
    weights = np.array([40.0, 80.0, 60.0])
    expected = sum(w * u["w"] for w, u in zip(weights, updates, strict=True)) / weights.sum()
    assert np.abs(res.aggregate["w"] - expected).max() <= res.stats.error_bound
    assert namespace["hist"].rounds[-1].round == 2
    assert capsys.readouterr().out.count("\n") >= 2
