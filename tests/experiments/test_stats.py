"""Across-seed statistics: the t quantile against SciPy, intervals, paired differences, and
results.json's aggregation of per-seed runs (a diverged seed is never averaged in)."""

import math

import pytest

from pppml_jax.experiments.aggregate import combine, compare, mean_rounds
from pppml_jax.experiments.stats import (
    format_interval,
    paired_difference,
    summarize,
    t_quantile,
)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 19, 30, 101])
@pytest.mark.parametrize("confidence", [0.8, 0.95, 0.99])
def test_t_quantile_equals_scipy(df, confidence):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.t.ppf(0.5 + confidence / 2, df)
    assert t_quantile(confidence, df) == pytest.approx(expected, rel=1e-10)


def test_t_quantile_known_values_without_scipy():
    assert t_quantile(0.95, 1) == pytest.approx(12.7062047, rel=1e-7)
    assert t_quantile(0.95, 2) == pytest.approx(4.3026527, rel=1e-7)
    assert t_quantile(0.95, 4) == pytest.approx(2.7764451, rel=1e-7)
    with pytest.raises(ValueError, match="df"):
        t_quantile(0.95, 0)


def test_summarize_mean_std_interval_and_short_inputs():
    s = summarize([0.5, 0.6, 0.7])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    half = t_quantile(0.95, 2) * 0.1 / math.sqrt(3)
    assert s["half_width"] == pytest.approx(half)
    assert s["ci"] == pytest.approx([0.6 - half, 0.6 + half])
    one = summarize([0.5, None, float("nan")])  # non-finite values are not seeds that finished
    assert one["n"] == 1 and one["mean"] == 0.5 and one["ci"] is None
    assert summarize([])["mean"] is None
    assert format_interval(s) == f"0.600 ± {half:.3f}"
    assert format_interval(one) == "0.500" and format_interval(summarize([])) == "n/a"


def test_paired_difference_pairs_by_seed():
    a = {0: 0.60, 1: 0.70, 2: 0.65, 3: None}
    b = {0: 0.50, 1: 0.61, 2: 0.54, 3: 0.9, 4: 0.1}
    d = paired_difference(a, b)
    assert d["seeds"] == [0, 1, 2] and d["differences"] == pytest.approx([0.1, 0.09, 0.11])
    assert d["excludes_zero"] is True and d["ci"][0] > 0
    noisy = paired_difference({0: 0.6, 1: 0.4}, {0: 0.5, 1: 0.5})
    assert noisy["excludes_zero"] is False
    assert paired_difference({0: 0.6}, {0: 0.5})["excludes_zero"] is None


def _seed(final_g, final_p, *, status="ok", loss=1.0):
    rounds = [
        {"round": 1, "seconds": 2.0, "train_loss": loss, "clients": [0, 1]},
        {
            "round": 2,
            "seconds": 1.0,
            "train_loss": loss / 2,
            "clients": [0, 1],
            "mean_global": final_g,
            "mean_personalized": final_p,
            "per_client_global": [final_g, final_g],
            "per_client_personalized": [final_p, None],
        },
    ]
    final = None
    if status == "ok":
        final = {
            "mean_global": final_g,
            "mean_personalized": final_p,
            "per_client": {
                "a": {"global": final_g, "personalized": final_p, "n_train": 5, "n_test": 2},
                "b": {"global": final_g, "personalized": None, "n_train": 6, "n_test": 2},
            },
        }
    record = {"status": status, "rounds": rounds, "final": final, "seconds": 3.0}
    record["execution"] = "loop"
    if status == "diverged":
        record["divergence"] = {"message": "x diverged in round 2", "round": 2}
    return record


def test_combine_keeps_the_old_fields_as_means_and_leaves_out_diverged_seeds():
    per_seed = {0: _seed(0.5, 0.6), 1: _seed(0.7, 0.8, loss=3.0), 2: _seed(9, 9, status="diverged")}
    run = combine(per_seed, ["a", "b"])
    assert run["seeds"] == [0, 1, 2] and run["diverged"] == [2]
    assert run["final"]["mean_global"] == pytest.approx(0.6)
    assert run["final"]["per_client"]["a"]["personalized"] == pytest.approx(0.7)
    assert run["final"]["per_client"]["b"]["personalized"] is None
    assert run["final"]["per_client"]["a"]["n_train"] == 5
    assert run["stats"]["mean_global"]["per_seed"] == {0: 0.5, 1: 0.7}
    assert run["stats"]["mean_global"]["n"] == 2
    assert run["rounds"][0]["train_loss"] == pytest.approx(2.0)
    assert run["rounds"][1]["per_client_personalized"][0] == pytest.approx(0.7)
    assert math.isnan(run["rounds"][1]["per_client_personalized"][1])
    assert run["per_seed"]["2"]["status"] == "diverged"
    other = combine({0: _seed(0.4, 0.5), 1: _seed(0.5, 0.6), 2: _seed(0.5, 0.6)}, ["a", "b"])
    pairs = compare({"x": run, "y": other}, ["a", "b"])
    g = next(c for c in pairs if c["metric"] == "global")
    assert (g["a"], g["b"], g["seeds"]) == ("x", "y", [0, 1])  # seed 2 diverged for x
    assert g["differences"] == pytest.approx([0.1, 0.2])
    assert g["per_client"]["a"]["differences"] == pytest.approx([0.1, 0.2])


def test_mean_rounds_of_no_runs_is_empty():
    assert mean_rounds([]) == []
