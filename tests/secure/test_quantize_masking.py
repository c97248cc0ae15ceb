"""Quantisation bounds and mask uniformity, checked against closed forms and statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import pppml_jax.secure as sec
from pppml_jax.secure import masking
from pppml_jax.secure.masking import uniform_mod
from pppml_jax.secure.quantize import (
    centered,
    dequantize,
    error_bound,
    make_spec,
    quantize,
    to_residues,
)


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("n", [3, 10])
def test_spec_fits_worst_case_and_bound_holds(n, stochastic):
    modulus = 2**16
    spec = make_spec(
        clip=0.5,
        num_parties=n,
        modulus=modulus,
        max_abs_each=2**15 - 1,
        max_abs_sum=2**15 - 1,
        stochastic=stochastic,
    )
    rng = np.random.default_rng(n)
    fractions = rng.dirichlet(np.ones(n))
    # Worst case: every client at the clip boundary, same sign; plus random values.
    for values in (np.full((n, 50), 0.5), rng.uniform(-2, 2, (n, 50))):
        qs = [
            quantize(v, fraction=p, spec=spec, rng=rng)[0]
            for v, p in zip(values, fractions, strict=True)
        ]
        total = np.sum(qs, axis=0)
        assert np.max(np.abs(total)) <= 2**15 - 1  # never wraps modulo 2**16
        wrapped = centered(to_residues(total, modulus), modulus)
        np.testing.assert_array_equal(wrapped, total)
        exact = np.sum(np.clip(values, -0.5, 0.5) * fractions[:, None], axis=0)
        err = np.max(np.abs(dequantize(total, spec) - exact))
        assert err <= error_bound(spec, n)
    assert error_bound(spec, n) == pytest.approx(n * (1.0 if stochastic else 0.5) / spec.scale)


def test_clipping_is_counted():
    spec = make_spec(
        clip=1.0,
        num_parties=3,
        modulus=2**20,
        max_abs_each=2**19 - 1,
        max_abs_sum=2**19 - 1,
        stochastic=False,
    )
    q, clipped = quantize(np.array([0.5, 1.5, -3.0, 1.0]), fraction=1.0, spec=spec)
    assert clipped == 2
    np.testing.assert_array_equal(q, np.rint(np.array([0.5, 1.0, -1.0, 1.0]) * spec.scale))


def test_stochastic_rounding_is_unbiased():
    spec = make_spec(
        clip=1.0,
        num_parties=3,
        modulus=2**8,
        max_abs_each=127,
        max_abs_sum=127,
        stochastic=True,
    )
    y = np.full(200_000, 0.3137)
    q, _ = quantize(y, fraction=1.0, spec=spec, rng=np.random.default_rng(0))
    target = 0.3137 * spec.scale
    assert set(np.unique(q)) == {np.floor(target), np.ceil(target)}
    # mean of Bernoulli draws: 5 standard errors
    se = np.sqrt((target % 1) * (1 - target % 1) / y.size)
    assert abs(q.mean() - target) < 5 * se


def test_modulus_too_small_is_refused():
    with pytest.raises(sec.InvalidOptionError, match="raise the backend's bits"):
        make_spec(
            clip=1.0,
            num_parties=10,
            modulus=2**4,
            max_abs_each=7,
            max_abs_sum=7,
            stochastic=False,
        )


def _chi2_pvalue(values, modulus):
    return stats.chisquare(np.bincount(values, minlength=modulus)).pvalue


@pytest.mark.parametrize("modulus", [256, 251, 129])
def test_mask_is_uniform(modulus):
    # Seeded stream: deterministic test of the rejection sampler.
    vals = uniform_mod(modulus, 200_000, source=masking.seeded_source(1))
    assert vals.min() >= 0 and vals.max() < modulus
    assert _chi2_pvalue(vals, modulus) > 1e-3
    # The operating system's generator, as used in deployment (fails with prob. 1e-6).
    vals = uniform_mod(modulus, 200_000)
    assert _chi2_pvalue(vals, modulus) > 1e-6


def test_uniformity_test_detects_modulo_bias():
    """The same test rejects the naive sampler ``byte % 251`` (values 0-4 twice as likely)."""
    raw = np.frombuffer(masking.seeded_source(2)(200_000), np.uint8).astype(np.int64)
    assert _chi2_pvalue(raw % 251, 251) < 1e-6


def test_large_moduli_cover_the_high_bits():
    t = (1 << 28) - 57  # a prime-sized odd modulus
    vals = uniform_mod(t, 100_000, source=masking.seeded_source(3))
    assert vals.max() < t
    top = vals >> 24  # the top 4 bits are uniform up to the partial last bucket
    counts = np.bincount(top, minlength=16)[:15]
    assert stats.chisquare(counts).pvalue > 1e-3


def test_relay_pads_are_keyed_and_position_specific():
    pad = masking.relay_pad(
        b"k" * 32, modulus=2**32, size=1000, session=bytes(16), round_index=1, attempt=0, position=2
    )
    same = masking.relay_pad(
        b"k" * 32, modulus=2**32, size=1000, session=bytes(16), round_index=1, attempt=0, position=2
    )
    other = masking.relay_pad(
        b"k" * 32, modulus=2**32, size=1000, session=bytes(16), round_index=1, attempt=0, position=3
    )
    other_key = masking.relay_pad(
        b"j" * 32, modulus=2**32, size=1000, session=bytes(16), round_index=1, attempt=0, position=2
    )
    np.testing.assert_array_equal(pad, same)
    assert not np.array_equal(pad, other) and not np.array_equal(pad, other_key)
    assert pad.min() >= 0 and pad.max() < 2**32
