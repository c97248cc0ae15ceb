"""Fixed-point quantisation of weighted updates, with the error bound it guarantees.

Client i holds an update ``x_i`` and a public weight fraction ``p_i = w_i / sum_j w_j``. It
sends the integer vector ``q_i = round(S * p_i * clip(x_i, -C, C))``. The ring adds the
``q_i`` modulo a modulus M; because ``sum_i p_i = 1``, the exact integer sum satisfies
``|sum_i q_i| <= C*S + n*u`` (u = 1/2 for round-to-nearest, u = 1 for stochastic rounding),
and S is chosen so that this stays below ``max_abs_sum < M/2``: the sum never wraps, and
``sum_i q_i / S`` differs from the weighted mean of the clipped updates by at most
``n * u / S`` in every coordinate (:func:`error_bound`). Values outside ``[-C, C]`` are clipped
and counted, never wrapped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pppml_jax.secure.errors import InvalidOptionError


@dataclass(frozen=True)
class QuantSpec:
    """How one channel's values become integers.

    Attributes:
      clip: C > 0; values are clipped to ``[-C, C]`` (update units).
      scale: S > 0, integers per update unit.
      stochastic: round ``y`` up with probability ``frac(y)`` instead of to the nearest.
      modulus: M, the modulus the integers are added under (mask modulus of the channel).
    """

    clip: float
    scale: float
    stochastic: bool
    modulus: int

    @property
    def rounding_unit(self) -> float:
        """Largest rounding error of one value, in integer units (1/2 or 1)."""
        return 1.0 if self.stochastic else 0.5


def make_spec(
    *,
    clip: float,
    num_parties: int,
    modulus: int,
    max_abs_each: int,
    max_abs_sum: int,
    stochastic: bool,
) -> QuantSpec:
    """Chooses the largest scale whose rounded, weighted contributions fit the backend.

    Args:
      clip: C > 0, the clip range ``[-C, C]``.
      num_parties: n, the number of contributions that are added.
      modulus: M, the modulus of the channel.
      max_abs_each: the largest ``|q_i|`` one contribution may have.
      max_abs_sum: the largest ``|sum_i q_i|`` the backend recovers exactly (below M/2).
      stochastic: whether stochastic rounding is used.

    Returns:
      A :class:`QuantSpec` with ``S = min((max_abs_sum - n*u) / C, (max_abs_each - u) / C)``.

    Raises:
      InvalidOptionError: the clip range is not a positive finite number, or the modulus is
        too small for n parties (fewer than 16 integer steps per clip range).
    """
    if not (isinstance(clip, (int, float)) and np.isfinite(clip) and clip > 0):
        raise InvalidOptionError(f"clip={clip!r}: pass a positive finite float (range [-C, C])")
    u = 1.0 if stochastic else 0.5
    scale = min((max_abs_sum - num_parties * u) / clip, (max_abs_each - u) / clip)
    if scale * clip < 16:
        raise InvalidOptionError(
            f"modulus {modulus} leaves only {scale * clip:.1f} integer steps per clip range for "
            f"{num_parties} parties; raise the backend's bits"
        )
    return QuantSpec(clip=float(clip), scale=float(scale), stochastic=stochastic, modulus=modulus)


def quantize(
    values: np.ndarray,
    *,
    fraction: float,
    spec: QuantSpec,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, int]:
    """Quantises one client's weighted, clipped values.

    Args:
      values: ``[d]`` float64 update values (update units).
      fraction: the client's public weight fraction ``p_i`` in ``[0, 1]``.
      spec: the channel's :class:`QuantSpec`.
      rng: source of the rounding offsets; required when ``spec.stochastic``.

    Returns:
      ``(q, clipped)``: ``[d]`` int64 ``round(S * p_i * clip(values))`` and how many values
      were outside ``[-C, C]``.
    """
    clipped = int(np.count_nonzero(np.abs(values) > spec.clip))
    y = np.clip(values, -spec.clip, spec.clip) * (spec.scale * fraction)
    if spec.stochastic:
        if rng is None:
            raise InvalidOptionError("stochastic rounding needs a random generator")
        q = np.floor(y + rng.random(y.shape))
    else:
        q = np.rint(y)
    return q.astype(np.int64), clipped


def dequantize(total: np.ndarray, spec: QuantSpec) -> np.ndarray:
    """Returns ``total / S``: the ``[d]`` float64 weighted mean from the exact integer sum."""
    return np.asarray(total, np.float64) / spec.scale


def error_bound(spec: QuantSpec, num_parties: int) -> float:
    """The largest ``|dequantize(sum q_i) - sum_i p_i clip(x_i)|`` in any coordinate.

    Equals ``n * u / S`` (u = 1/2, or 1 with stochastic rounding); float64 round-off of the
    scaling adds at most a few ulps on top, negligible at these magnitudes.
    """
    return num_parties * spec.rounding_unit / spec.scale


def to_residues(values: np.ndarray, modulus: int) -> np.ndarray:
    """Maps int64 values to their residues in ``[0, modulus)`` (int64; modulus <= 2**62)."""
    return np.mod(values, np.int64(modulus))


def centered(residues: np.ndarray, modulus: int) -> np.ndarray:
    """Maps residues to the representatives in ``(-modulus/2, modulus/2]`` (int64)."""
    r = np.mod(residues, np.int64(modulus))
    return np.where(r > modulus // 2, r - np.int64(modulus), r)
