"""Backend-level checks: decryption guards, stated parameters, the interface's invariants."""

from __future__ import annotations

import numpy as np
import pytest
from _secure_helpers import BACKEND_CASES

import pppml_jax.secure as sec
from pppml_jax.secure.backends import make_backend
from pppml_jax.secure.backends.concrete import ConcreteSum


@pytest.mark.parametrize("case", list(BACKEND_CASES))
def test_decrypt_of_sum_equals_sum_modulo_m(aggregators, case):
    """decrypt(E(a) + E(b) + E(c)) = a + b + c (mod M), with a a full-range residue."""
    backend = aggregators(case).backend
    secret = aggregators(case).keys.hospital.backend_secret
    rng = np.random.default_rng(0)
    k = 2 * backend.slots
    m = backend.modulus
    first = rng.integers(-(m // 2) + 1, m // 2, k)
    others = [rng.integers(-backend.max_abs_each, backend.max_abs_each + 1, k) for _ in range(2)]
    running = backend.add(secret, None, backend.encrypt(secret, first, first=True))
    for v in others:
        data = backend.serialize(running)
        running = backend.deserialize(secret, data, where="test")
        running = backend.add(secret, running, backend.encrypt(secret, v, first=False))
    got = np.mod(backend.decrypt(secret, running), m)
    np.testing.assert_array_equal(got, np.mod(first + others[0] + others[1], m))


@pytest.mark.parametrize("case", list(BACKEND_CASES))
def test_info_states_parameters_and_security(aggregators, case):
    info = aggregators(case).backend.info()
    assert info.name == BACKEND_CASES[case]["backend"]
    assert info.modulus == aggregators(case).backend.modulus
    assert info.security and info.hiding and info.parameters
    if info.name in ("bfv", "ckks", "concrete"):
        assert "128-bit" in info.security
    assert info.exact == (info.name != "ckks")


def test_bfv_refuses_a_sum_whose_noise_budget_is_spent():
    backend = make_backend("bfv", bits=16, max_parties=3)
    secret, _ = backend.keygen()
    running = backend.encrypt(secret, np.ones(backend.slots, np.int64), first=False)
    with pytest.raises(sec.DecryptionError, match="noise budget"):
        for _ in range(40):  # each self-addition doubles the noise
            for c in running:
                c.add_(c)
            backend.decrypt(secret, running)


def test_ckks_refuses_a_value_it_cannot_round():
    backend = make_backend("ckks")
    secret, _ = backend.keygen()
    ct = backend.encrypt(secret, np.full(backend.slots, 0.5), first=False)
    with pytest.raises(sec.DecryptionError, match="round exactly"):
        backend.decrypt(secret, ct)


def test_concrete_refuses_a_sum_that_used_up_its_slack():
    backend = make_backend("concrete", bits=8, chunk_size=16, max_parties=3)
    secret, _ = backend.keygen()
    values = np.arange(16) - 8
    running = backend.add(secret, None, backend.encrypt(secret, values, first=False))
    with pytest.raises(sec.DecryptionError, match="slack"):
        for k in range(1, 40):  # acc + acc doubles the noise (and the values)
            running = ConcreteSum(
                [backend._run(secret, c, c) for c in running.chunks], False, 2 * running.offsets
            )
            got = backend.decrypt(secret, running)
            np.testing.assert_array_equal(got, np.mod(values * 2**k, backend.modulus))


def test_relay_material_holds_no_secret_key(aggregators):
    for case in BACKEND_CASES:
        agg = aggregators(case)
        assert not agg.backend.public_holds_secret(agg.keys.relay.backend_public)
    bfv = aggregators("bfv")
    assert bfv.backend.public_holds_secret(bfv.keys.hospital.backend_secret.context)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("bfv", {"bits": 44}),
        ("bfv", {"bits": 36, "max_parties": 4096}),
        ("bfv", {"poly_modulus_degree": 2048}),
        ("ckks", {"mask_bits": 60}),
        ("concrete", {"bits": 40}),
        ("plain", {"bits": 63}),
        ("plain", {"preset": "lean"}),
    ],
)
def test_unsafe_or_unknown_parameters_are_refused(name, options):
    with pytest.raises(sec.InvalidOptionError):
        make_backend(name, **options)
