"""The threat-model table of docs/secure_aggregation.md, one test per row: the colluding parties
play against the public transcript (``pj.secure.transcript``) and what they hold."""

from __future__ import annotations

import numpy as np
import pytest

import pppml_jax.secure as sec
from pppml_jax.secure import transcript
from pppml_jax.secure.pairwise import PairParty

N = 5
WEIGHTS = [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.fixture(scope="module")
def updates():
    rng = np.random.default_rng(7)
    return [{"w": rng.uniform(-0.9, 0.9, 512).astype(np.float32)} for _ in range(N)]


def _isolate(agg, res, updates, victim, coalition):
    """The coalition's best estimate of the victim's update: the messages into and out of the
    victim decrypted with the shared keys, minus the pair masks the coalition knows."""
    pred = (victim - 1) % N
    before = transcript.read_partial(agg, transcript.message_from(res, sender=pred))
    after = transcript.read_partial(agg, transcript.message_from(res, sender=victim))
    channel = "encrypted" if agg.backend.name == "bfv" else "masked"
    diff = transcript.difference(after, before, channel)
    m = res.stats.moduli[channel]
    if res.stats.pairwise:
        known = transcript.known_pair_masks(agg, res, victim, coalition, channel=channel,
                                            size=diff.size)  # fmt: skip
        diff = np.mod(diff - known, m)
        diff = np.where(diff > m // 2, diff - m, diff)
    p = WEIGHTS[victim] / sum(WEIGHTS)
    return transcript.to_update_units(diff, res, channel, p, updates[0])


@pytest.mark.parametrize("backend", ["plain", "bfv"])
@pytest.mark.parametrize(
    ("row", "coalition"),
    [("relay plus one hospital", [4]), ("two colluding neighbours", [1, 3])],
)
def test_collusion_recovers_an_update_without_pairwise_masks_and_nothing_with(
    updates, backend, row, coalition
):
    victim = 2
    truth = updates[victim]["w"].astype(np.float64)
    for pairwise in (False, True):
        agg = sec.SecureAggregator(backend, record_pair_secrets=True)
        res = agg.aggregate(updates, WEIGHTS, round_index=0, pairwise=pairwise)
        guess = _isolate(agg, res, updates, victim, coalition)[: truth.size]
        err = np.max(np.abs(guess - truth))
        if not pairwise:
            assert err < 1e-6, (row, err)  # the ring alone leaks the update exactly
        else:
            assert err > 0.5 and abs(np.corrcoef(guess, truth)[0, 1]) < 0.2, (row, err)


def test_relay_alone_and_one_hospital_alone_see_uniform_values(updates):
    agg = sec.SecureAggregator("plain", record_pair_secrets=True)
    res = agg.aggregate(updates, WEIGHTS, round_index=0)
    reading = transcript.read_partial(agg, transcript.message_from(res, sender=0))
    truth = updates[0]["w"].astype(np.float64)
    guess = transcript.to_update_units(reading.values["masked"], res, "masked", 1 / 15, updates[0])
    assert abs(np.corrcoef(guess[: truth.size], truth)[0, 1]) < 0.2


def test_dropout_is_recovered_from_t_shares_without_restarting(updates):
    res = sec.cyclic_aggregate(updates, WEIGHTS, round_index=0, faults=[sec.Dropout(3, hop=1)])
    assert res.stats.attempts == 1 and res.stats.recovered == (3,)
    assert res.stats.participants == (0, 1, 2, 4) and res.stats.threshold == 3
    kinds = {m.kind for m in res.transcript}
    assert {"keys", "share", "reveal", "partial", "result"} <= kinds
    keep = [0, 1, 2, 4]
    w = np.asarray([WEIGHTS[i] for i in keep])
    ref = sum(wi * updates[i]["w"].astype(np.float64) for wi, i in zip(w, keep, strict=True))
    assert np.max(np.abs(res.aggregate["w"] - ref / w.sum())) <= res.stats.error_bound


def test_too_few_survivors_for_the_threshold_reform_the_ring(updates):
    res = sec.cyclic_aggregate(
        updates, WEIGHTS, round_index=0, threshold=5, faults=[sec.Dropout(3, hop=1)]
    )
    assert res.stats.attempts == 2 and res.stats.recovered == ()


def test_a_survivor_refuses_to_reveal_the_key_of_a_hospital_it_heard_from():
    party = PairParty(0, bytes(16))
    party.keep_share(2, b"\1" * 66)
    party.heard_from.add(2)
    with pytest.raises(sec.ProtocolError, match="refuses to reveal"):
        party.reveal_share(2, where="test")


def test_ckks_ciphertexts_cannot_carry_pairwise_masks(updates):
    with pytest.raises(sec.InvalidOptionError, match="cannot carry pairwise masks"):
        sec.SecureAggregator("ckks").aggregate(updates, WEIGHTS, round_index=0, pairwise=True)
