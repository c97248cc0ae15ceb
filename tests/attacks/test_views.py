"""Every party's view of a real secure-aggregation round, and iDLG against each of them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _settings import ATTACK

from pppml_jax.attacks import Gradient, idlg
from pppml_jax.attacks.scoring import noise_floor, scores
from pppml_jax.attacks.views import VIEWS, _decrypt_as_hospital, _victim_message, party_views
from pppml_jax.secure import SecureAggregator
from pppml_jax.secure.tree import flatten_updates

CLIP = 4.0


def _flat(tree):
    return np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def updates(tiny):
    """Three clients, one image each: their gradients (all within the clip range)."""
    grad = jax.jit(Gradient(tiny.loss_fn))
    out = [
        jax.tree.map(np.asarray, grad(tiny.params, jnp.asarray(x), jnp.asarray(y)))
        for x, y in zip(tiny.images[:3], tiny.labels[:3], strict=True)
    ]
    assert max(np.abs(_flat(u)).max() for u in out) < CLIP
    return out


@pytest.fixture(scope="module")
def aggregators():
    made = {}

    def get(name):
        if name not in made:
            made[name] = SecureAggregator(name)
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
    decoder against the protocol (the mask cancels in the difference)."""
    agg = aggregators(backend)
    weights = [1.0, 1.0, 2.0]
    res = agg.aggregate(updates, weights, round_index=0, clip=CLIP, encrypt=None)
    flat = flatten_updates(updates)
    first = _decrypt_as_hospital(agg, _victim_message(res.transcript, 0), flat.sizes)
    last = next(m for m in res.transcript if m.kind == "partial" and m.hop == 2)
    closing = _decrypt_as_hospital(agg, last, flat.sizes)
    channel = "masked" if backend == "plain" else "encrypted"
    modulus = res.stats.moduli[channel]
    diff = np.mod(closing - first, modulus)
    diff = np.where(diff > modulus // 2, diff - modulus, diff) / res.stats.scales[channel]
    p = np.asarray(weights) / sum(weights)
    expected = p[1] * _flat(updates[1]) + p[2] * _flat(updates[2])
    np.testing.assert_allclose(diff, expected, atol=2 * 0.5 / res.stats.scales[channel] + 1e-12)


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


def test_bad_arguments_are_refused(updates, aggregators):
    with pytest.raises(ValueError, match="at least two"):
        party_views(updates[:1], [1.0])
    with pytest.raises(ValueError, match="victim=3"):
        party_views(updates, [1, 1, 1], victim=3, aggregator=aggregators("plain"))
    with pytest.raises(ValueError, match="observer=0"):
        party_views(updates, [1, 1, 1], observer=0, aggregator=aggregators("plain"))
