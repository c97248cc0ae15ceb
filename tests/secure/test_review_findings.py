"""One test per finding of the adversarial review (issue 12, items 1-5): each failed before."""

from __future__ import annotations

import warnings

import jax
import ml_dtypes
import numpy as np
import pytest
from _secure_helpers import SHAPES_A, random_tree

import pppml_jax.secure as sec
from pppml_jax.secure import transcript
from pppml_jax.secure.messages import context_digest, seal
from pppml_jax.secure.parties import Attempt, Hospital
from pppml_jax.secure.relay import PhaseTimer


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


def _mean(updates, weights):
    p = np.asarray(weights, np.float64) / np.sum(weights)
    return sum(pi * _flat(u) for pi, u in zip(p, updates, strict=True))


@pytest.fixture
def big_updates():
    """Updates of std 3 (the review's case: clip=1 was off by 5.5)."""
    rng = np.random.default_rng(0)
    return [random_tree(rng, SHAPES_A, scale=3.0) for _ in range(4)]


# ------------------------------------------------------------------ 1. no silent clipping
@pytest.mark.parametrize("backend", ["plain", "bfv"])
def test_default_never_clips_and_the_bound_holds(big_updates, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("error", sec.ClippingWarning)
        res = sec.cyclic_aggregate(big_updates, [1, 2, 3, 4], backend=backend, round_index=0)
    assert res.stats.clip == "auto" and res.stats.clipped_total == 0
    err = np.max(np.abs(_flat(res.aggregate) - _mean(big_updates, [1, 2, 3, 4])))
    assert err <= res.stats.error_bound < 1e-5


def test_explicit_clip_warns_and_the_bound_includes_the_clipping(big_updates):
    with pytest.warns(sec.ClippingWarning, match=r"coordinate\(s\) beyond clip=1.0 were clipped"):
        res = sec.cyclic_aggregate(big_updates, [1, 2, 3, 4], round_index=0, clip=1.0)
    assert res.stats.clipped_total > 0 and res.stats.clipping_bound > 1.0
    err = np.max(np.abs(_flat(res.aggregate) - _mean(big_updates, [1, 2, 3, 4])))
    assert err > 0.1  # clipping changed the result...
    assert err <= res.stats.error_bound  # ...and the stated bound says so


# ------------------------------------------------------------------ 2. fresh sessions
def _q_diff(res, k):
    """What the relay reads between messages k-1 and k, for masked-only values (uint32)."""
    data = [transcript.relay_sections(transcript.message_from(res, sender=j)) for j in (k - 1, k)]
    a, b = (np.frombuffer(d["masked"], "<u4").astype(np.int64) for d in data)
    return np.mod(b - a, 2**32)


def test_two_calls_with_the_same_round_give_the_relay_nothing():
    # Sessions draw fresh randomness per call, so the outcome is random: with n coordinates
    # the correlation of unrelated vectors has standard deviation 1/sqrt(n). Enough
    # coordinates (4096) and a 6-sigma threshold make a false failure ~1e-9 likely, while
    # a reused pad gives correlation 1 (error 1e-9, the review's measurement).
    rng = np.random.default_rng(0)
    shapes = {"params": {"w": (64, 64)}}
    big_updates = [random_tree(rng, shapes, scale=3.0) for _ in range(4)]
    other = [jax.tree.map(lambda x: x * 0.5, u) for u in big_updates]
    a = sec.cyclic_aggregate(big_updates, [1] * 4, round_index=0, pairwise=False)
    b = sec.cyclic_aggregate(other, [1] * 4, round_index=0, pairwise=False)
    assert a.stats.session != b.stats.session and a.stats.key_id != b.stats.key_id
    scale = a.stats.scales["masked"] / 4
    ranges = np.repeat(
        list(a.stats.leaf_ranges.values()), [x.size for x in jax.tree.leaves(other[0])]
    )
    guess = (np.mod(_q_diff(a, 2) - _q_diff(b, 2) + 2**31, 2**32) - 2**31) / scale * ranges
    truth = _flat(big_updates[2]) - _flat(other[2])
    assert np.max(np.abs(guess - truth)) > 1.0  # the difference attack fails
    assert abs(np.corrcoef(guess, truth)[0, 1]) < 6 / np.sqrt(truth.size)


def test_an_aggregator_refuses_a_completed_round_but_a_failed_one_can_be_retried(big_updates):
    agg = sec.SecureAggregator("plain")
    agg.aggregate(big_updates, [1] * 4, round_index=3)
    with pytest.raises(sec.ReusedRoundError, match="round_index=3 already completed"):
        agg.aggregate(big_updates, [1] * 4, round_index=3)
    with pytest.raises(sec.TamperedMessageError):
        agg.aggregate(big_updates, [1] * 4, round_index=4, faults=[sec.Tamper(hop=2)])
    res = agg.aggregate(big_updates, [1] * 4, round_index=4)  # the retry runs
    assert all(m.session.hex() == res.stats.session for m in res.transcript)
    assert sec.SecureAggregator("plain").aggregate(big_updates, [1] * 4, round_index=3)


def test_round_index_is_required(big_updates):
    with pytest.raises(TypeError, match="round_index"):
        sec.cyclic_aggregate(big_updates, [1] * 4)  # type: ignore[call-arg]


# ------------------------------------------------------------------ 3. replays, reorderings
@pytest.mark.parametrize("case", ["plain", "bfv", "ckks-lean", "ckks-paper", "concrete"])
def test_replays_from_another_call_or_position_are_refused(aggregators, case):
    rng = np.random.default_rng(1)
    updates = [random_tree(rng, SHAPES_A) for _ in range(4)]
    agg = aggregators(case)
    key = agg.keys.hospital.key_id
    with pytest.raises(sec.TamperedMessageError) as failed:
        agg.aggregate(updates, [1] * 4, round_index=100, faults=[sec.Tamper(hop=3)])
    old = [m for m in failed.value.transcript if m.kind == "partial"]
    with pytest.raises(sec.ReplayedMessageError, match="another call"):
        agg.aggregate(updates, [1] * 4, round_index=100, faults=[sec.Inject(1, old[1])])
    with pytest.raises(sec.WrongSenderError, match="comes from client 0"):
        agg.aggregate(updates, [1] * 4, round_index=100, faults=[sec.Inject(2, from_hop=0)])
    assert (key, 100) not in agg.completed_rounds()  # nothing was consumed
    res = agg.aggregate(updates, [1] * 4, round_index=100)
    assert np.max(np.abs(_flat(res.aggregate) - _mean(updates, [1] * 4))) <= res.stats.error_bound


def test_a_message_for_another_ring_order_or_weights_is_refused():
    keys = sec.SecureAggregator("plain").keys.hospital
    session = bytes(16)
    leaves = [np.zeros(3)]

    def attempt(order, weights):
        ctx = context_digest(session, 0, 0, order, weights)
        return Attempt(0, 0, tuple(order), {}, {}, session, ctx, {}, 0)

    good = attempt([0, 1, 2], [0.2, 0.3, 0.5])
    receiver = Hospital(1, leaves, keys, [], PhaseTimer(), None)
    for other in (attempt([0, 2, 1], [0.2, 0.3, 0.5]), attempt([0, 1, 2], [0.5, 0.3, 0.2])):
        msg = seal(keys.mac_key, sender=0, receiver=1, kind="partial", round_index=0, attempt=0,
                   hop=0, body=b"\0", session=session, context=other.context)  # fmt: skip
        with pytest.raises(sec.WrongContextError, match="another ring order"):
            receiver.open(good, msg, kind="partial", hop=0, sender=0)


# ------------------------------------------------------------------ 4. effective parties
def test_ring_counts_parties_with_positive_weight():
    rng = np.random.default_rng(2)
    updates = [random_tree(rng, SHAPES_A) for _ in range(4)]
    with pytest.raises(sec.RingTooSmallError, match="2 client"):
        sec.cyclic_aggregate(updates[:3], [5, 7, 0], round_index=0)
    with pytest.raises(sec.RingTooSmallError, match="after client 2 dropped out"):
        sec.cyclic_aggregate(
            updates, [5, 7, 1, 0], round_index=0, faults=[sec.Dropout(2, hop=1)], pairwise=False
        )
    res = sec.cyclic_aggregate(updates, [5, 7, 1, 0], round_index=0)
    assert res.stats.participants == (0, 1, 2)


# ------------------------------------------------------------------ 5. edge cases
def test_empty_leaves():
    ok = [{"a": np.zeros((0, 3), np.float32), "b": np.ones(2, np.float32) * i} for i in range(3)]
    res = sec.cyclic_aggregate(ok, [1, 1, 1], round_index=0)
    assert res.aggregate["a"].shape == (0, 3) and np.allclose(res.aggregate["b"], 1.0)
    with pytest.raises(sec.InvalidUpdateError, match="every leaf of the updates is empty"):
        sec.cyclic_aggregate([{"a": np.zeros(0, np.float32)}] * 3, [1, 1, 1], round_index=0)


def test_huge_weights_do_not_overflow():
    updates = [{"w": np.full(4, float(i), np.float32)} for i in range(3)]
    res = sec.cyclic_aggregate(updates, [1e308, 1e308, 1e308], round_index=0)
    np.testing.assert_allclose(res.aggregate["w"], 1.0, atol=res.stats.error_bound)
    with pytest.raises(sec.InvalidUpdateError, match="finite"):
        sec.cyclic_aggregate(updates, [1e308, float("inf"), 1], round_index=0)


@pytest.mark.parametrize(
    ("dtype", "match"), [(np.int32, "integer"), (np.complex64, "imaginary"), (bool, "bool")]
)
def test_integer_complex_and_bool_leaves_are_refused(dtype, match):
    updates = [{"w": np.array([5, -3]).astype(dtype)} for _ in range(3)]
    with pytest.raises(sec.InvalidUpdateError, match=match):
        sec.cyclic_aggregate(updates, [1, 1, 1], round_index=0)


def test_the_published_result_is_the_returned_aggregate_bit_for_bit():
    rng = np.random.default_rng(3)
    updates = [
        {
            "f64": rng.normal(0, 0.1, 5),
            "f32": rng.normal(0, 0.1, 4).astype(np.float32),
            "bf16": rng.normal(0, 0.1, 3).astype(ml_dtypes.bfloat16),
        }
        for _ in range(3)
    ]
    res = sec.cyclic_aggregate(updates, [1, 2, 3], round_index=0)
    wire = transcript.read_result(transcript.message_from(res, sender=res.initiator, kind="result"),
                                  updates[0])  # fmt: skip
    for k in updates[0]:
        assert wire[k].dtype == res.aggregate[k].dtype == updates[0][k].dtype
        assert wire[k].tobytes() == res.aggregate[k].tobytes()
