"""Protocol tests on the plain backend: refusals, initiators, masks, pads, dropouts, keys."""

from __future__ import annotations

import copy
import warnings

import jax
import numpy as np
import pytest
from _secure_helpers import SHAPES_A, SHAPES_B, random_tree, weighted_mean
from scipy import stats

import pppml_jax.secure as sec
from pppml_jax.secure import transcript
from pppml_jax.secure.masking import seeded_source
from pppml_jax.secure.messages import open_sealed, unpack_sections


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture
def updates():
    rng = np.random.default_rng(0)
    return [random_tree(rng, SHAPES_A) for _ in range(5)]


# ------------------------------------------------------------------ refusals of bad input
def test_two_party_ring_refused_unless_allowed(updates):
    with pytest.raises(sec.RingTooSmallError, match="allow_two_party"):
        sec.cyclic_aggregate(updates[:2], [1, 1], round_index=0)
    with pytest.raises(sec.RingTooSmallError):
        sec.cyclic_aggregate(updates[:1], [1], round_index=0)
    with pytest.warns(sec.TwoPartyRingWarning, match="learn the other's update"):
        res = sec.cyclic_aggregate(updates[:2], [1, 3], allow_two_party=True, round_index=0)
    ref = weighted_mean(updates[:2], [1, 3])
    for g, r in zip(_leaves(res.aggregate), ref, strict=True):
        assert np.max(np.abs(g - r)) <= res.stats.error_bound


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_update_refused_naming_client_and_leaf(updates, bad):
    broken = copy.deepcopy(updates)
    broken[3]["params"]["Conv_0"]["bias"][1] = bad
    with pytest.raises(sec.NonFiniteUpdateError, match=r"updates\[3\] leaf 'params/Conv_0/bias'"):
        sec.cyclic_aggregate(broken, [1] * 5, round_index=0)


def test_mismatched_structure_or_shape_refused(updates):
    other = copy.deepcopy(updates)
    other[2]["params"]["extra"] = np.zeros(1, np.float32)
    with pytest.raises(sec.StructureMismatchError, match=r"updates\[2\]"):
        sec.cyclic_aggregate(other, [1] * 5, round_index=0)
    other = copy.deepcopy(updates)
    other[4]["params"]["Dense_0"]["kernel"] = np.zeros(6, np.float32)
    with pytest.raises(sec.StructureMismatchError, match="'params/Dense_0/kernel' has shape"):
        sec.cyclic_aggregate(other, [1] * 5, round_index=0)
    assert issubclass(sec.StructureMismatchError, ValueError)


@pytest.mark.parametrize(
    "weights", [[1, 1, 1, 1], [1, 1, -1, 1, 1], [0, 0, 0, 0, 0], [1, 1, float("nan"), 1, 1]]
)
def test_bad_weights_refused(updates, weights):
    with pytest.raises(sec.InvalidUpdateError, match="weights"):
        sec.cyclic_aggregate(updates, weights, round_index=0)


@pytest.mark.parametrize(
    "options",
    [
        {"backend": "rsa"},
        {"clip": -1.0},
        {"initiator": "random"},
        {"on_dropout": "retry"},
        {"encrypt": ["nothing/*"], "backend": "bfv"},
        {"preset": "huge", "backend": "ckks"},
        {"bits": 4},
        {"no_such_option": 1},
        {"faults": ["drop client 2"]},
        {"faults": [sec.Tamper(hop=9)]},
    ],
)
def test_invalid_options_refused(updates, options):
    with pytest.raises(sec.InvalidOptionError):
        sec.cyclic_aggregate(updates, [1] * 5, **options, round_index=0)


def test_values_beyond_clip_are_clipped_and_counted_not_wrapped(updates):
    big = copy.deepcopy(updates)
    big[1]["params"]["Dense_0"]["kernel"][:] = [5.0, -7.0, 0.5, 2.0, 0.0]
    res = sec.cyclic_aggregate(big, [1] * 5, clip=1.0, bits=16, round_index=0)
    assert res.stats.clipped[1] == 3 and res.stats.clipped_total == 3
    ref = weighted_mean(big, [1] * 5, clip=1.0)
    for g, r in zip(_leaves(res.aggregate), ref, strict=True):
        assert np.max(np.abs(g - r)) <= res.stats.error_bound
    # Summing the unclipped values would have given 5/5 + ..., far outside the bound.
    assert res.aggregate["params"]["Dense_0"]["kernel"][0] < 0.5


# ------------------------------------------------------------------ initiators
def test_round_robin_initiator_rotates(updates):
    n = len(updates)
    seen = []
    for r in range(2 * n):
        res = sec.cyclic_aggregate(updates, [1] * n, round_index=r)
        assert res.transcript[0].sender == res.initiator
        seen.append(res.initiator)
    assert seen == [r % n for r in range(2 * n)]


def test_seeded_initiator_is_shared_unsteerable_and_covers_everyone():
    n = 7
    a = [sec.choose_initiator("seeded", round_index=r, num_clients=n, seed=3) for r in range(200)]
    b = [sec.choose_initiator("seeded", round_index=r, num_clients=n, seed=3) for r in range(200)]
    c = [sec.choose_initiator("seeded", round_index=r, num_clients=n, seed=4) for r in range(200)]
    assert a == b and a != c
    assert set(a) == set(range(n))
    assert a != [r % n for r in range(200)]
    with pytest.raises(sec.InvalidOptionError, match="seed"):
        sec.choose_initiator("seeded", round_index=0, num_clients=n, seed=None)


def test_seeded_initiator_in_the_ring(updates):
    res = sec.cyclic_aggregate(updates, [1] * 5, round_index=11, seed=9, initiator="seeded")
    expected = sec.choose_initiator("seeded", round_index=11, num_clients=5, seed=9)
    assert res.initiator == expected == res.transcript[0].sender


# ------------------------------------------------------------------ masks and pads
def _residues(message, agg, key_name="masked"):
    env = open_sealed(agg.keys.hospital.mac_key, message.payload, where="test")
    return np.frombuffer(unpack_sections(env.body, where="test")[key_name], "<u4").astype(np.int64)


def test_running_sum_seen_by_a_hospital_is_uniform():
    """A hospital decrypting message 0 sees R + q_0 mod 2^k: uniform whatever q_0 is."""
    agg = sec.SecureAggregator("plain", bits=8)
    const = [{"w": np.full(4096, 0.25, np.float32)} for _ in range(3)]
    seen = []
    for r in range(0, 30, 3):  # initiator 0 every time; the same update every time
        res = agg.aggregate(const, [1, 1, 1], round_index=r, clip=1.0)
        seen.append(_residues(transcript.message_from(res, sender=0), agg))
    counts = np.bincount(np.concatenate(seen), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-6


def test_relay_pads_hide_updates_from_the_relay():
    """Without pads, consecutive messages differ by a client's quantised update."""
    rng = np.random.default_rng(1)
    updates = [{"w": rng.uniform(-1, 1, 64).astype(np.float32)} for _ in range(4)]
    for pads in (False, True):
        agg = sec.SecureAggregator("plain")
        res = agg.aggregate(
            updates, [1, 1, 1, 1], round_index=0, relay_pads=pads, pairwise=False, clip=1.0
        )
        scale = res.stats.scales["masked"]
        two, one = (_residues(transcript.message_from(res, sender=k), agg) for k in (2, 1))
        diff = np.mod(two - one, 2**32)
        q2 = np.mod(
            np.rint(updates[2]["w"].astype(np.float64) * scale * 0.25).astype(np.int64), 2**32
        )
        assert np.array_equal(diff, q2) == (not pads)


def test_masks_are_fresh_unless_the_private_test_hook_is_set(updates):
    agg = sec.SecureAggregator("plain")
    kw = {"pairwise": False, "relay_pads": False}
    a = transcript.message_from(agg.aggregate(updates, [1] * 5, round_index=0, **kw), sender=0)
    b = transcript.message_from(agg.aggregate(updates, [1] * 5, round_index=5, **kw), sender=0)
    assert transcript.relay_sections(a) != transcript.relay_sections(b)
    agg._test_mask_source = seeded_source(5)
    c = transcript.message_from(agg.aggregate(updates, [1] * 5, round_index=10, **kw), sender=0)
    agg._test_mask_source = seeded_source(5)
    d = transcript.message_from(agg.aggregate(updates, [1] * 5, round_index=15, **kw), sender=0)
    assert transcript.relay_sections(c) == transcript.relay_sections(d)


def test_mask_seed_cannot_come_from_options_or_a_config(updates):
    with pytest.raises(sec.InvalidOptionError, match="mask_seed is no longer an option"):
        sec.cyclic_aggregate(updates, [1] * 5, round_index=0, mask_seed=5)


def test_result_is_deterministic_given_seed(updates):
    """Stochastic rounding is seeded; the mask cancels exactly, so results repeat bit for bit."""
    kw = {"round_index": 3, "seed": 7, "stochastic_rounding": True}
    a = sec.cyclic_aggregate(updates, [1, 2, 3, 4, 5], **kw)
    b = sec.cyclic_aggregate(updates, [1, 2, 3, 4, 5], **kw)
    for x, y in zip(_leaves(a.aggregate), _leaves(b.aggregate), strict=True):
        np.testing.assert_array_equal(x, y)
    ref = weighted_mean(updates, [1, 2, 3, 4, 5])
    for g, r in zip(_leaves(a.aggregate), ref, strict=True):
        assert np.max(np.abs(g - r)) <= a.stats.error_bound
    assert a.stats.quantization_bound == pytest.approx(5 * 1.0 / a.stats.scales["masked"])


# ------------------------------------------------------------------ dropouts
def test_initiator_dropout_hands_over_to_the_next_client(updates):
    res = sec.cyclic_aggregate(updates, [1] * 5, round_index=2, faults=[sec.Dropout(2, hop=3)])
    assert res.stats.dropped == ((2, 0, 4),)  # noticed when message 4 closes the ring
    assert res.initiator == 3 and res.stats.participants == (0, 1, 3, 4)
    ref = weighted_mean([updates[i] for i in (0, 1, 3, 4)], [1] * 4)
    for g, r in zip(_leaves(res.aggregate), ref, strict=True):
        assert np.max(np.abs(g - r)) <= res.stats.error_bound


def test_dropout_after_forwarding_keeps_the_contribution(updates):
    # Round 0, ring 0..4: client 1 sends message 1, then goes offline before message 2.
    res = sec.cyclic_aggregate(updates, [1] * 5, round_index=0, faults=[sec.Dropout(1, hop=2)])
    assert res.stats.attempts == 1 and res.stats.participants == (0, 1, 2, 3, 4)
    assert res.stats.offline_after_contributing == (1,)


def test_dropouts_that_leave_two_clients_are_refused():
    rng = np.random.default_rng(2)
    updates = [random_tree(rng, SHAPES_B) for _ in range(3)]
    with pytest.raises(sec.RingTooSmallError, match="after client 1 dropped out"):
        sec.cyclic_aggregate(updates, [1, 1, 1], faults=[sec.Dropout(1)], round_index=0)
    with pytest.warns(sec.TwoPartyRingWarning):
        res = sec.cyclic_aggregate(
            updates, [1, 1, 1], faults=[sec.Dropout(1)], allow_two_party=True, round_index=0
        )
    assert res.stats.participants == (0, 2)


def test_failures_leave_inputs_and_keys_unchanged(updates):
    agg = sec.SecureAggregator("plain", rotate_every=1)
    agg.aggregate(updates, [1] * 5, round_index=0)
    key_id = agg.keys.hospital.key_id
    before = copy.deepcopy(updates)
    with pytest.raises(sec.SecureAggregationError) as info:
        agg.aggregate(updates, [1] * 5, round_index=1, faults=[sec.Tamper(hop=2)])
    assert info.value.transcript  # what crossed the wire before the failure
    assert agg.keys.hospital.key_id == key_id  # the due rotation was not committed
    for a, b in zip(_leaves(updates), _leaves(before), strict=True):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ keys
def test_key_rotation_and_stale_keys():
    rng = np.random.default_rng(3)
    updates = [random_tree(rng, SHAPES_B) for _ in range(3)]
    agg = sec.SecureAggregator("bfv", rotate_every=2)
    ids = [agg.aggregate(updates, [1, 1, 1], round_index=r).stats.key_id for r in range(5)]
    assert ids[0] == ids[1] != ids[2] == ids[3] != ids[4]
    old = agg.aggregate(updates, [1, 1, 1], round_index=5)
    agg.rotate_keys(round_index=5)
    # A message sealed under the old key set fails authentication under the new one.
    with pytest.raises(sec.TamperedMessageError, match="another key set"):
        agg.aggregate(updates, [1, 1, 1], round_index=5, faults=[sec.Inject(0, old.transcript[0])])


def test_an_aggregator_keeps_its_keys_and_each_call_of_the_function_makes_new_ones():
    rng = np.random.default_rng(4)
    updates = [random_tree(rng, SHAPES_B) for _ in range(3)]
    agg = sec.SecureAggregator("bfv")
    a = agg.aggregate(updates, [1, 1, 1], round_index=0)
    b = agg.aggregate(updates, [1, 1, 1], round_index=1, clip=2.0)
    assert a.stats.key_id == b.stats.key_id and a.stats.session != b.stats.session
    c = sec.cyclic_aggregate(updates, [1, 1, 1], backend="bfv", round_index=0)
    d = sec.cyclic_aggregate(updates, [1, 1, 1], backend="bfv", round_index=0)
    assert len({a.stats.key_id, c.stats.key_id, d.stats.key_id}) == 3


def test_lazy_imports():
    """Importing the package (and using plain) never imports TenSEAL or concrete."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, pppml_jax as pj\n"
        "u=[{'w': np.ones(3, np.float32)}]*3\n"
        "pj.secure.cyclic_aggregate(u, [1,1,1], round_index=0)\n"
        "assert 'tenseal' not in sys.modules and 'concrete' not in sys.modules\n"
        "pj.secure.SecureAggregator('bfv')\n"
        "assert 'tenseal' in sys.modules and 'concrete' not in sys.modules\n"
    )
    with warnings.catch_warnings():
        subprocess.run([sys.executable, "-c", code], check=True)


def test_jax_and_bfloat16_leaves_come_back_in_their_dtypes():
    import jax.numpy as jnp

    rng = np.random.default_rng(5)
    updates = [
        {
            "a": jnp.asarray(rng.normal(0, 0.1, 6), jnp.bfloat16),
            "b": jnp.asarray(rng.normal(0, 0.1, 3)),
        }
        for _ in range(3)
    ]
    res = sec.cyclic_aggregate(updates, [1, 2, 3], round_index=0)
    assert res.aggregate["a"].dtype == jnp.bfloat16 and res.aggregate["b"].dtype == np.float32
    ref = weighted_mean(updates, [1, 2, 3])
    got = [np.asarray(res.aggregate[k], np.float64) for k in ("a", "b")]
    for g, r in zip(got, ref, strict=True):
        assert np.max(np.abs(g - r)) <= res.stats.error_bound
    with pytest.raises(sec.InvalidUpdateError, match="dtype bool"):
        sec.cyclic_aggregate([{"a": np.ones(2, bool)}] * 3, [1, 1, 1], round_index=0)


def test_library_failures_are_wrapped(monkeypatch, updates):
    agg = sec.SecureAggregator("plain")

    def broken(*args, **kwargs):
        raise RuntimeError("library exploded")

    monkeypatch.setattr(agg.backend, "encrypt", broken)
    with pytest.raises(sec.BackendError, match="library exploded") as info:
        agg.aggregate(updates, [1] * 5, round_index=0)
    assert isinstance(info.value.__cause__, RuntimeError)
