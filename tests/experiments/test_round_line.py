"""The CLI's round line says when the secure ring clipped anything, and by how much."""

from pppml_jax.cli.run import round_line

BASE = {"algorithm": "pppml", "seed": 0, "round": 3, "of": 10, "train_loss": 0.5, "seconds": 1.0}


def test_round_line_shows_ring_bytes_and_no_clipping_when_none():
    ring = {"bytes": 2_500_000, "clipped": 0, "clip_excess": 0.0, "error_bound": 1e-7}
    line = round_line({**BASE, "secure": ring})
    assert "ring 2.5 MB" in line and "CLIPPED" not in line


def test_round_line_names_clipped_values_excess_and_bound():
    ring = {"bytes": 1e6, "clipped": 12, "clip_excess": 0.75, "error_bound": 0.2}
    line = round_line({**BASE, "secure": ring})
    assert "CLIPPED 12 values (largest excess 0.75, error bound 0.2)" in line
