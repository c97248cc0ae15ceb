"""Across-seed statistics: mean, standard deviation, Student-t confidence intervals, paired
differences.

The t quantile is computed here, exactly, rather than taken from SciPy: a confidence interval
over ``n`` seeds needs the quantile for the integer ``n - 1`` degrees of freedom only, where
the Student-t distribution function has a finite closed form (Abramowitz & Stegun 26.7.3-4),
and inverting it by bisection is a few lines. SciPy (about 40 MB installed) stays a dev
dependency; ``tests/experiments/test_stats.py`` checks these quantiles against it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CONFIDENCE = 0.95


def t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with ``df`` (a positive integer) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df={df!r} must be a positive integer")
    if t <= 0:
        return 0.0
    if math.isinf(t):
        return 1.0
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:  # A&S 26.7.3: (2/pi) [theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 ...)]
        total, term = 0.0, c
        for k in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c * c * (2 * k) / (2 * k + 1)
        return (2 / math.pi) * (theta + s * total) if df > 1 else 2 * theta / math.pi
    total, term = 0.0, 1.0  # A&S 26.7.4: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2 + 1):
        total += term
        term *= c * c * (2 * k - 1) / (2 * k)
    return s * total


def t_quantile(confidence: float, df: int) -> float:
    """The ``t`` with ``P(|T| <= t) = confidence`` (e.g. 12.706 for 0.95 and 1 df)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    lo, hi = 0.0, 1.0
    while t_two_sided_mass(hi, df) < confidence:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_two_sided_mass(mid, df) < confidence:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def summarize(values: Sequence[float | None], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, sample standard deviation and Student-t interval of the finite ``values``.

    Returns a dict: ``n`` (finite values used), ``mean``, ``std`` (``ddof=1``), ``ci`` (the
    ``[low, high]`` interval), ``half_width`` and ``confidence``; ``std``, ``ci`` and
    ``half_width`` are None with fewer than two values, ``mean`` is None with none.
    """
    xs = _finite(values)
    n = len(xs)
    out: dict[str, Any] = {"n": n, "mean": None, "std": None, "ci": None, "half_width": None}
    out["confidence"] = confidence
    if n == 0:
        return out
    mean = math.fsum(xs) / n
    out["mean"] = mean
    if n >= 2:
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
        half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
        out.update(std=std, ci=[mean - half, mean + half], half_width=half)
    return out


def paired_difference(
    a: Mapping[Any, float | None], b: Mapping[Any, float | None], confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """``a - b`` paired by key (seed): the keys where both are finite, and :func:`summarize`.

    ``excludes_zero`` is True when the interval lies wholly above or below zero (None when
    there is no interval).
    """
    keys = [
        k
        for k in a
        if k in b and _finite([a[k]]) and _finite([b[k]])  # both finished and finite
    ]
    diffs = [float(a[k]) - float(b[k]) for k in keys]
    out = {"seeds": list(keys), "differences": diffs, **summarize(diffs, confidence)}
    ci = out["ci"]
    out["excludes_zero"] = None if ci is None else bool(ci[0] > 0 or ci[1] < 0)
    return out


def format_interval(summary: Mapping[str, Any], digits: int = 3) -> str:
    """``"0.512 ± 0.031"`` (mean ± half width), ``"0.512"`` for one value, ``"n/a"`` for none."""
    if summary.get("mean") is None:
        return "n/a"
    text = f"{summary['mean']:.{digits}f}"
    if summary.get("half_width") is not None:
        text += f" ± {summary['half_width']:.{digits}f}"
    return text
