"""The threat-model table of docs/secure_aggregation.md, one test per row: the colluding parties
play against the public transcript (``pj.secure.transcript``) and what they hold."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import pppml_jax.secure as sec
from pppml_jax.secure import transcript
from pppml_jax.secure.masking import relay_pad
from pppml_jax.secure.messages import HEADER_BYTES, TAG_BYTES, open_sealed, pack_sections
from pppml_jax.secure.pairwise import (
    PairParty,
    pair_seed,
    rebuild_private,
    shamir_combine,
    signed_mask_sum,
)
from pppml_jax.secure.parties import ZERO_EXPONENT

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


# ------------------------------------------------------------------ clip="auto": the range leak
def _range_messages(res):
    return {m.sender: m for m in res.transcript if m.kind == "range"}


def test_the_relay_reads_exactly_each_clients_per_leaf_power_of_two_from_range_messages():
    rng = np.random.default_rng(11)
    like = {"a": (6,), "b": (3, 4), "z": (5,)}
    updates = [
        {k: rng.normal(0, 0.1 * (i + 1), s).astype(np.float32) for k, s in like.items()}
        for i in range(N)
    ]
    for u in updates:
        u["z"][:] = 0.0  # an all-zero leaf
    res = sec.cyclic_aggregate(updates, WEIGHTS, round_index=0)
    msgs = _range_messages(res)
    assert sorted(msgs) == list(range(N))  # one public announcement per hospital
    names = list(res.stats.leaf_ranges)  # flat leaf order: a, b, z
    exps = {}
    for i, m in msgs.items():
        assert (m.receiver, m.hop, m.attempt) == (sec.RELAY, -1, 0)
        sections = transcript.relay_sections(m)  # the relay holds no key: plain bytes
        assert list(sections) == ["exponents"] and len(sections["exponents"]) == 2 * len(names)
        assert len(m.payload) == HEADER_BYTES + len(pack_sections(sections)) + TAG_BYTES
        exps[i] = np.frombuffer(sections["exponents"], "<i2")
        for name, e in zip(names, exps[i], strict=True):
            top = float(np.max(np.abs(updates[i][name].astype(np.float64))))
            if top == 0:
                assert e == ZERO_EXPONENT
            else:  # 2**(e-1) <= max|leaf| < 2**e: the bound, nothing finer
                assert 2.0 ** (e - 1) <= top < 2.0**e
    # ...and the largest of them is each leaf's public fixed-point range
    top = np.max(np.stack(list(exps.values())), axis=0)
    expect = [1.0 if e == ZERO_EXPONENT else 2.0**e for e in top]
    assert list(res.stats.leaf_ranges.values()) == expect
    # Nothing more: other updates with the same per-leaf exponents send identical bytes.
    other = [
        {k: (np.sign(v) * rng.uniform(0.5, 0.99, v.shape) * 2.0 ** int(e)).astype(np.float32)
         for (k, v), e in zip(u.items(), exps[i], strict=True)}
        for i, u in enumerate(updates)
    ]  # fmt: skip
    for u in other:
        u["z"][:] = 0.0
    res2 = sec.cyclic_aggregate(other, WEIGHTS, round_index=0)
    for i, m in _range_messages(res2).items():
        assert transcript.relay_sections(m) == transcript.relay_sections(msgs[i])
    # An explicit clip announces nothing.
    res3 = sec.cyclic_aggregate(updates, WEIGHTS, round_index=0, clip=1.0)
    assert not _range_messages(res3)


# ------------------------------------------------------------------ relay + c < t hospitals
def _relay_and_hospitals(agg, res, updates, victims, coalition):
    """Per victim, the coalition's estimate (see ``_isolate``)."""
    return {v: _isolate(agg, res, updates, v, coalition)[: updates[v]["w"].size] for v in victims}


@pytest.mark.parametrize("backend", ["plain", "bfv"])
def test_relay_plus_fewer_than_t_hospitals_learn_each_update_without_masks_only_the_sum_with(
    updates, backend
):
    coalition, honest = [1, 3], [0, 2, 4]  # c = 2 < t = 3
    p = np.asarray(WEIGHTS) / sum(WEIGHTS)
    truth = {i: updates[i]["w"].astype(np.float64) for i in range(N)}
    for pairwise in (False, True):
        agg = sec.SecureAggregator(backend, record_pair_secrets=True)
        res = agg.aggregate(updates, WEIGHTS, round_index=0, pairwise=pairwise)
        assert res.stats.threshold == (3 if pairwise else 0)
        guess = _relay_and_hospitals(agg, res, updates, [2, 4], coalition)
        # the aggregate minus the colluders' own updates: the honest hospitals' weighted sum
        honest_sum = res.aggregate["w"].astype(np.float64) - sum(p[c] * truth[c] for c in coalition)
        ref = sum(p[h] * truth[h] for h in honest)
        assert np.max(np.abs(honest_sum - ref)) < 1e-6  # always known (the aggregate is public)
        if not pairwise:
            for v in (2, 4):
                assert np.max(np.abs(guess[v] - truth[v])) < 1e-6
            # and the initiator's update from the public aggregate
            u0 = (honest_sum - p[2] * guess[2] - p[4] * guess[4]) / p[0]
            assert np.max(np.abs(u0 - truth[0])) < 1e-5
        else:
            for v in (2, 4):
                err = np.max(np.abs(guess[v] - truth[v]))
                assert err > 0.5 and abs(np.corrcoef(guess[v], truth[v])[0, 1]) < 0.2, (v, err)
            # not even the sum of two honest updates: their masks with hospital 0 remain
            pair = p[2] * guess[2] + p[4] * guess[4]
            pair_truth = p[2] * truth[2] + p[4] * truth[4]
            assert abs(np.corrcoef(pair, pair_truth)[0, 1]) < 0.2


# ------------------------------------------------------------------ t or more hospitals
def _public(secret: int) -> bytes:
    key = X25519PrivateKey.from_private_bytes(secret.to_bytes(32, "little"))
    return key.public_key().public_bytes_raw()


def test_t_hospitals_rebuild_a_mask_key_from_their_shares_and_unmask_the_victim(updates):
    agg = sec.SecureAggregator("plain", record_pair_secrets=True)
    res = agg.aggregate(updates, WEIGHTS, round_index=0)
    t, victim = res.stats.threshold, 2
    assert t == 3
    session = bytes.fromhex(res.stats.session)
    pairs = agg.pair_secrets(session)
    # Hospitals 0, 1, 4 received no running sum from the victim, so each hands over its share.
    shares = {j: pairs[j].reveal_share(victim, where="coalition") for j in (0, 1, 4)}
    # t - 1 shares interpolate to an unrelated field element (almost surely not even 32 bytes)
    guess = shamir_combine({j + 1: int.from_bytes(shares[j], "little") for j in (0, 1)})
    assert guess >= 2**256 or _public(guess) != pairs[victim].public.mask
    key = rebuild_private(shares)
    assert key.public_key().public_bytes_raw() == pairs[victim].public.mask  # the mask key
    # With it, every pair seed of the victim, hence its whole pairwise mask.
    seeds = {
        j: pair_seed(key, victim, j, pairs[j].public.mask, session) for j in range(N) if j != victim
    }
    assert all(seeds[j] == pairs[j].seed_with(victim) for j in seeds)
    before = transcript.read_partial(agg, transcript.message_from(res, sender=victim - 1))
    after = transcript.read_partial(agg, transcript.message_from(res, sender=victim))
    diff = transcript.difference(after, before, "masked")
    m = res.stats.moduli["masked"]
    mask = signed_mask_sum(seeds, victim, modulus=m, size=diff.size, attempt=0, channel="masked")
    q = np.mod(diff - mask, m)
    q = np.where(q > m // 2, q - m, q)
    guess = transcript.to_update_units(q, res, "masked", WEIGHTS[victim] / sum(WEIGHTS), updates[0])
    assert np.max(np.abs(guess - updates[victim]["w"])) < 1e-6


# ------------------------------------------------------------------ retry under fixed keys
def test_a_retried_round_under_the_same_keys_gives_the_relay_no_pad_difference():
    """Same aggregator (same pad key), same round index: the failed try and the retry."""
    rng = np.random.default_rng(12)
    first = [{"w": rng.normal(0, 0.3, 4096).astype(np.float32)} for _ in range(4)]
    second = [{"w": rng.normal(0, 0.3, 4096).astype(np.float32)} for _ in range(4)]
    agg = sec.SecureAggregator("plain")
    keys = agg.keys.hospital  # made now and kept (a failed first call would discard its keys)
    kw = {"round_index": 7, "pairwise": False, "clip": 2.0}  # fixed ranges; no value clips
    with pytest.raises(sec.TamperedMessageError) as failed:
        agg.aggregate(first, [1] * 4, faults=[sec.Tamper(hop=3)], **kw)
    res = agg.aggregate(second, [1] * 4, **kw)  # allowed: round 7 never completed
    assert res.stats.key_id == keys.key_id and res.stats.clipped_total == 0
    for m in failed.value.transcript[:3]:  # the failed try ran under the same keys
        open_sealed(keys.mac_key, m.payload, where="test")  # (message 3 is the tampered one)
    k, m = 2, 2**32  # ring 3 0 1 2 (initiator 7 % 4): message 2 comes from client 1
    victim = (7 + k) % 4

    def relay_diff(msgs):  # what the relay reads between messages k-1 and k
        hop = {x.hop: x for x in msgs if x.kind == "partial" and x.attempt == 0}
        a, b = (
            np.frombuffer(transcript.relay_sections(hop[h])["masked"], "<u4") for h in (k - 1, k)
        )
        return np.mod(b.astype(np.int64) - a.astype(np.int64), m)

    sessions = [failed.value.transcript[0].session, bytes.fromhex(res.stats.session)]
    assert sessions[0] != sessions[1]
    d = [relay_diff(failed.value.transcript), relay_diff(res.transcript)]
    scale, p = res.stats.scales["masked"], 1 / 4
    truth = first[victim]["w"].astype(np.float64) - second[victim]["w"].astype(np.float64)

    def to_units(x):
        x = np.mod(x, m)
        return np.where(x > m // 2, x - m, x) / (scale * p) * 2.0

    guess = to_units(d[0] - d[1])  # the difference attack: would be u_first - u_second
    assert np.max(np.abs(guess - truth)) > 1.0
    assert abs(np.corrcoef(guess, truth)[0, 1]) < 6 / np.sqrt(truth.size)
    # Control: the pads (hospitals' key) are what defeats it; removed, the attack works.
    pads = [
        relay_pad(keys.pad_key, modulus=m, size=truth.size, session=s,
                  round_index=7, attempt=0, position=k)
        for s in sessions
    ]  # fmt: skip
    assert np.max(np.abs(to_units(d[0] - pads[0] - d[1] + pads[1]) - truth)) < 1e-6
