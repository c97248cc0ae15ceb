"""Every party's view of a real secure-aggregation round, and iDLG against each of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _settings import ATTACK

from pppml_jax.attacks import Gradient, idlg
from pppml_jax.attacks.scoring import noise_floor, scores
from pppml_jax.attacks.views import (
    COLLUSION_VIEWS,
    VIEWS,
    collusion_views,
    fresh_round,
    hospital_integers,
    party_views,
)
from pppml_jax.secure import SecureAggregator
from pppml_jax.secure import transcript as tx

CLIP = 4.0


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def four(tiny):
    """Four clients, one image each: their gradients (all within the clip range)."""
    grad = jax.jit(Gradient(tiny.loss_fn))
    out = [
        jax.tree.map(np.asarray, grad(tiny.params, jnp.asarray(x), jnp.asarray(y)))
        for x, y in zip(tiny.images[:4], tiny.labels[:4], strict=True)
    ]
    assert max(np.abs(_flat(u)).max() for u in out) < CLIP
    return out


@pytest.fixture(scope="module")
def updates(four):
    """The first three clients (the single-party views' ring)."""
    return four[:3]


@pytest.fixture(scope="module")
def aggregators():
    """One aggregator per backend for the whole module: every view takes a fresh round on it."""
    made = {}

    def get(name):
        if name not in made:
            made[name] = SecureAggregator(name, record_pair_secrets=True)
        return made[name]

    return get


@pytest.mark.parametrize("backend", ["plain", "bfv", "ckks"])
def test_each_view_holds_what_that_party_sees(updates, aggregators, backend):
    weights = [1.0, 2.0, 3.0]
    p = np.asarray(weights) / sum(weights)
    pv = party_views(updates, weights, victim=0, clip=CLIP, aggregator=aggregators(backend))
    assert set(pv.views) == set(VIEWS)
    assert (pv.victim, pv.next_client, pv.observer, pv.clipped) == (0, 1, 2, 0)
    u = [_flat(x) for x in updates]
    bound = 1e-4  # far above the quantisation error of any backend here, far below |u|
    np.testing.assert_array_equal(_flat(pv.views["plain"]), u[0].astype(np.float32))
    mean = sum(pi * ui for pi, ui in zip(p, u, strict=True))
    np.testing.assert_allclose(_flat(pv.views["aggregate"]), mean, atol=bound)
    others = (p[0] * u[0] + p[1] * u[1]) / (1 - p[2])
    np.testing.assert_allclose(_flat(pv.views["aggregate_minus_own"]), others, atol=2 * bound)

    # Masked and encrypted views are independent of the victim's update.
    for view in ("relay", "next_client"):
        corr = np.corrcoef(_flat(pv.views[view]), u[0])[0, 1]
        assert abs(corr) < 0.1, (view, corr)
    # The relay's bytes do not parse as an update: half the "values" are beyond the clip range
    # (a real update has none), and the payload is larger than float32 values would be.
    relay = pv.diagnostics["relay"]
    assert relay["beyond_clip"] > 0.25 and relay["bytes_per_value"] > 4
    assert pv.diagnostics["plain"]["beyond_clip"] == 0.0
    if backend in ("plain", "bfv"):  # exact backends: R uniform modulo M, so R / (S p) is
        # uniform on about [-C/p, C/p] and a share 1 - p of it lies beyond the clip range
        share = pv.diagnostics["next_client"]["beyond_clip"]
        assert share == pytest.approx(1 - p[0], abs=0.05)


@pytest.mark.parametrize("backend", ["plain", "bfv"])
def test_decrypted_running_sums_add_up_the_other_clients(updates, aggregators, backend):
    """What the successor and the initiator decrypt differs by sum_{k>=1} p_k u_k: checks the
    decoder against the protocol (the mask R cancels in the difference; pairwise masks are
    off, since those of clients 1 and 2 cancel only against client 0's)."""
    agg = aggregators(backend)
    weights = [1.0, 1.0, 2.0]
    d = _flat(updates[0]).size
    res = agg.aggregate(
        updates, weights, round_index=fresh_round(agg, 0, 3), clip=CLIP, encrypt=None,
        pairwise=False,
    )  # fmt: skip
    first = hospital_integers(agg, tx.message_from(res, sender=0), d)
    closing = hospital_integers(agg, tx.message_from(res, sender=2), d)
    channel = "masked" if backend == "plain" else "encrypted"
    modulus = res.stats.moduli[channel]
    diff = np.mod(closing - first, modulus)
    diff = np.where(diff > modulus // 2, diff - modulus, diff)
    # q = S p u / range: in update units each client's rounding is at most range / (2 S p)
    p = np.asarray(weights) / sum(weights)
    got = tx.to_update_units(diff, res, channel, 1.0, updates[0])
    expected = p[1] * _flat(updates[1]) + p[2] * _flat(updates[2])
    np.testing.assert_allclose(got, expected, atol=2 * 0.5 * CLIP / res.stats.scales[channel])


def test_repeated_views_on_one_aggregator_take_fresh_rounds(updates, aggregators):
    """A completed round index is refused (ReusedRoundError), so each call steps by n."""
    agg = aggregators("plain")
    first = party_views(updates, [1.0, 1.0, 1.0], victim=1, clip=CLIP, aggregator=agg)
    again = party_views(updates, [1.0, 1.0, 1.0], victim=1, clip=CLIP, aggregator=agg)
    assert first.round_index % 3 == again.round_index % 3 == 1
    assert again.round_index > first.round_index
    # fresh sessions: the successor's two readings share nothing
    corr = np.corrcoef(_flat(first.views["next_client"]), _flat(again.views["next_client"]))
    assert abs(corr[0, 1]) < 0.1


def test_two_party_ring_leaks_the_other_update_exactly(updates, aggregators):
    pv = party_views(updates[:2], [1.0, 3.0], victim=0, clip=CLIP, aggregator=aggregators("plain"))
    np.testing.assert_allclose(_flat(pv.views["aggregate_minus_own"]), _flat(updates[0]), atol=1e-6)


def test_masked_and_encrypted_views_stay_at_the_noise_floor(tiny, updates, aggregators):
    """iDLG recovers the victim from the plain update and the two-party leak, and nothing
    (not the victim, not any other client) from what the relay or the next client hold."""
    pv = party_views(updates, [1.0, 1.0, 1.0], victim=0, clip=CLIP, aggregator=aggregators("bfv"))
    leak = party_views(updates[:2], [1.0, 1.0], victim=0, clip=CLIP,
                       aggregator=aggregators("plain"))  # fmt: skip
    truth = tiny.images[0]

    def attack(tree):
        return idlg(tiny.loss_fn, tiny.params, tree, input_shape=tiny.input_shape,
                    num_classes=tiny.num_classes, seed=0, **ATTACK)  # fmt: skip

    for tree in (pv.views["plain"], leak.views["aggregate_minus_own"]):
        rec = attack(tree)
        assert rec.label == int(tiny.labels[0])
        assert scores(rec.image, truth)["psnr"] >= 30.0
    for view in ("relay", "next_client"):
        rec = attack(pv.views[view])
        for client in range(3):
            image = tiny.images[client]
            floor = noise_floor(image, draws=64, seed=client)
            got = scores(rec.image, image)
            # The floor is the best of 64 random guesses and grey; the views are fresh
            # cryptographic randomness every run, so allow a little slack on top of it.
            assert got["psnr"] <= floor["psnr"] + 1.0, (view, client, got, floor)
            assert got["ssim"] <= floor["ssim"] + 0.05, (view, client, got, floor)


@pytest.mark.parametrize("backend", ["plain", "bfv"])
def test_collusion_isolates_the_update_without_pairwise_masks_and_nothing_with(
    four, aggregators, backend
):
    """Relay plus one hospital and the two neighbours, on a ring of four (t = 3)."""
    weights = [1.0, 2.0, 3.0, 4.0]
    truth = _flat(four[1])
    agg = aggregators(backend)
    off = collusion_views(four, weights, victim=1, pairwise=False, clip=CLIP, aggregator=agg)
    on = collusion_views(four, weights, victim=1, pairwise=True, clip=CLIP, aggregator=agg)
    assert set(off.views) == set(on.views) == set(COLLUSION_VIEWS)
    assert off.initiator == 0 and off.round_index % 4 == on.round_index % 4 == 0
    assert on.coalitions == {"relay_plus_hospital": (2,), "colluding_neighbours": (0, 2)}
    assert (off.pairwise, on.pairwise, on.threshold) == (False, True, 3)
    for view in COLLUSION_VIEWS:
        # masks off: the victim's quantised update (error at most range / (2 S p))
        np.testing.assert_allclose(_flat(off.views[view]), truth, atol=1e-6)
        assert off.diagnostics[view]["beyond_clip"] == 0.0
        # masks on: its masks with the honest hospital(s) outside the coalition hide it
        got = _flat(on.views[view])
        assert abs(np.corrcoef(got, truth)[0, 1]) < 0.1, view
        assert on.diagnostics[view]["beyond_clip"] > 0.5
        assert on.diagnostics[view]["unknown_masks"] == (2 if view == "relay_plus_hospital" else 1)


def test_collusion_views_reach_the_noise_floor_only_with_pairwise_masks(tiny, four, aggregators):
    """iDLG on the two coalitions' views: the victim's image without pairwise masks, the
    noise floor with them."""
    agg = aggregators("bfv")
    weights = [1.0, 1.0, 1.0, 1.0]
    off = collusion_views(four, weights, victim=1, pairwise=False, clip=CLIP, aggregator=agg)
    on = collusion_views(four, weights, victim=1, clip=CLIP, aggregator=agg)  # default: on
    assert on.pairwise
    truth = tiny.images[1]
    floor = noise_floor(truth, draws=64, seed=1)

    def attack(tree):
        return idlg(tiny.loss_fn, tiny.params, tree, input_shape=tiny.input_shape,
                    num_classes=tiny.num_classes, seed=0, **ATTACK)  # fmt: skip

    rec = attack(off.views["colluding_neighbours"])
    assert rec.label == int(tiny.labels[1]) and scores(rec.image, truth)["psnr"] >= 30.0
    for view in COLLUSION_VIEWS:
        got = scores(attack(on.views[view]).image, truth)
        assert got["psnr"] <= floor["psnr"] + 1.0, (view, got, floor)
        assert got["ssim"] <= floor["ssim"] + 0.05, (view, got, floor)


def test_bad_arguments_are_refused(updates, aggregators):
    with pytest.raises(ValueError, match="at least two"):
        party_views(updates[:1], [1.0])
    with pytest.raises(ValueError, match="victim=3"):
        party_views(updates, [1, 1, 1], victim=3, aggregator=aggregators("plain"))
    with pytest.raises(ValueError, match="observer=0"):
        party_views(updates, [1, 1, 1], observer=0, aggregator=aggregators("plain"))
    with pytest.raises(ValueError, match="ring of 3"):
        collusion_views(updates, [1, 1, 0], victim=0, aggregator=aggregators("plain"))
    with pytest.raises(ValueError, match="hospital=0"):
        collusion_views(updates, [1, 1, 1], victim=0, hospital=0, aggregator=aggregators("plain"))
