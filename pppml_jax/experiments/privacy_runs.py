"""The privacy experiment's three runs: reference gradients, local updates, secure views.

Each run takes the attacked :class:`~pppml_jax.experiments.privacy_data.Problem`, the merged
config and an event callback, and returns its JSON-ready results and the images of its figure.
Every attack is seeded from ``cfg["seed"]``, so a run is deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax.attacks.crops import Crops
from pppml_jax.attacks.idlg import Reconstruction, idlg, idlg_update
from pppml_jax.attacks.observations import Gradient, LocalUpdate
from pppml_jax.attacks.scoring import noise_floor, psnr_score, scores, summarize
from pppml_jax.attacks.views import COLLUSION_VIEWS, collusion_views, party_views
from pppml_jax.experiments.privacy_config import attack_options
from pppml_jax.experiments.privacy_data import Problem, load_crops


class Emitter:
    """Calls ``progress`` (if any) with one dict per event: ``emit(event="image", ...)``."""

    def __init__(self, progress: Callable[[dict], None] | None) -> None:
        self.progress = progress

    def __call__(self, **event: Any) -> None:
        if self.progress is not None:
            self.progress(event)


def _record(rec: Reconstruction, truth: np.ndarray, label: int, floor: dict) -> dict[str, Any]:
    """One attacked image's record: scores, labels, distance, iterations, noise floor."""
    return {
        **scores(rec.image, truth),
        "label": rec.label,
        "true_label": int(label),
        "label_correct": rec.label == int(label),
        "distance": rec.distance,
        "iterations": int(sum(rec.iterations)),
        "floor_psnr": floor["psnr"],
        "floor_ssim": floor["ssim"],
    }


def _numeric(diagnostics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric facts of a view's diagnostics (the summary takes their medians)."""
    return {
        k: float(v)
        for k, v in diagnostics.items()
        if isinstance(v, (int, float, np.integer, np.floating))
    }


def _attack_view(problem: Problem, observed, opts, seed: int) -> Reconstruction:
    return idlg(
        problem.loss_fn, problem.params, observed, input_shape=problem.input_shape,
        num_classes=problem.num_classes, seed=seed, **opts,
    )  # fmt: skip


def _attack_crops(
    problem: Problem,
    crops: Crops,
    observe: Callable[..., Any],
    attack: Callable[[Any, int], Reconstruction],
    cfg: Mapping[str, Any],
    emit: Callable[..., None],
    **where: Any,
) -> tuple[list[dict[str, Any]], list[tuple]]:
    """Observes and attacks each crop (seed ``cfg["seed"] + i``), emitting an ``image`` event.

    Returns:
      The records and the figure's ``(truth, reconstruction, record)`` triples.
    """
    seed = int(cfg["seed"])
    records, figure = [], []
    for i, (truth, label) in enumerate(zip(crops.images, crops.labels, strict=True)):
        observed = observe(problem.params, jnp.asarray(truth), jnp.asarray(label))
        rec = attack(observed, seed + i)
        floor = noise_floor(truth, draws=int(cfg["noise_floor"]["draws"]), seed=seed + i)
        record = {"source": crops.sources[i], **_record(rec, truth, label, floor)}
        records.append(record)
        figure.append((truth, rec.image, record))
        emit(event="image", **where, index=i, **record)
    return records, figure


def run_reference(problem: Problem, cfg: Mapping[str, Any], emit: Callable[..., None]):
    """Experiment 1: iDLG on plain single-image gradients; returns (results, figure images)."""
    opts = attack_options(cfg)
    seed = int(cfg["seed"])
    observe = jax.jit(Gradient(problem.loss_fn))

    def attack(grads, attack_seed: int) -> Reconstruction:
        return _attack_view(problem, grads, opts, attack_seed)

    out, figure = {}, {}
    for name in cfg["reference"]["datasets"]:
        start = time.perf_counter()
        crops = load_crops(name, int(cfg["reference"]["images"]), cfg, seed=seed)
        records, images = _attack_crops(
            problem, crops, observe, attack, cfg, emit, section="reference", dataset=name
        )
        figure.setdefault(name, []).extend(images)
        out[name] = {
            "summary": {**summarize(records), "seconds": time.perf_counter() - start},
            "images": records,
        }
    return out, figure


def run_local_update(problem: Problem, cfg: Mapping[str, Any], emit: Callable[..., None]):
    """Experiment 2: the K-step FedAvg model difference, attacked by update matching."""
    lu = cfg["local_update"]
    if int(lu["images"]) < 1:
        return {}, []
    opts = attack_options(cfg)
    seed = int(cfg["seed"])
    steps, lr = int(lu["local_steps"]), float(lu["lr"])
    observe = jax.jit(LocalUpdate(problem.loss_fn, steps, lr))
    start = time.perf_counter()
    crops = load_crops(lu["dataset"], int(lu["images"]), cfg, seed=seed + 1)

    def attack(update, attack_seed: int) -> Reconstruction:
        return idlg_update(
            problem.loss_fn, problem.params, update, input_shape=problem.input_shape,
            num_classes=problem.num_classes, local_steps=steps, lr=lr, seed=attack_seed, **opts,
        )  # fmt: skip

    records, figure = _attack_crops(
        problem, crops, observe, attack, cfg, emit, section="local_update"
    )
    summary = {**summarize(records), "seconds": time.perf_counter() - start}
    return {"dataset": lu["dataset"], "local_steps": steps, "lr": lr, "summary": summary,
            "images": records}, figure  # fmt: skip


PAIRWISE_BACKENDS = ("plain", "bfv")
"""Backends whose ciphertexts carry pairwise masks (``ckks`` and ``concrete`` refuse them)."""

COLLUSION_RING = 4
"""Smallest ring for the coalition views: with 3 hospitals the victim's two neighbours are all
the others (t = 2 of them rebuild every key, and the aggregate alone gives the victim away),
so the coalition round uses ``max(views.clients, 4)`` clients, the extra ones holding crops of
their own (drawn with seed ``seed + 3``)."""


def _collusion_round(updates, weights, *, clip: float, aggregator, backend: str):
    """The coalition views of victim 0 with pairwise masks on (where the backend carries them)
    and off: view key -> (tree, diagnostics), and the round facts for the results."""
    observed: dict[str, tuple[Any, dict]] = {}
    facts: dict[str, Any] = {}
    settings = [(True, ""), (False, "_no_pairwise")]
    if backend not in PAIRWISE_BACKENDS:
        settings = settings[1:]
        facts["skipped"] = f"pairwise masks on: the {backend} backend cannot carry them"
    for pairwise, suffix in settings:
        cv = collusion_views(updates, weights, victim=0, pairwise=pairwise, clip=clip,
                             aggregator=aggregator)  # fmt: skip
        for view in COLLUSION_VIEWS:
            observed[view + suffix] = (cv.views[view], cv.diagnostics[view])
        facts.update(
            clients=len(updates),
            victim=cv.victim,
            initiator=cv.initiator,
            coalitions={k: list(v) for k, v in cv.coalitions.items()},
        )
        if pairwise:
            facts["threshold"] = cv.threshold
        facts.setdefault("clipped", 0)
        facts["clipped"] += cv.clipped
    return observed, facts


def run_views(problem: Problem, cfg: Mapping[str, Any], emit: Callable[..., None]):
    """Experiment 3: every party's view of one round of CSA, the two-client leak, and what two
    coalitions (relay plus one hospital, the victim's two neighbours) isolate with pairwise
    masks on and off."""
    from pppml_jax.secure import SecureAggregator

    vc = cfg["views"]
    n, trials = int(vc["clients"]), int(vc["trials"])
    if trials < 1:
        return {}, []
    if n < 3:
        raise ValueError(f"views.clients={n}: the secure views need n >= 3 clients")
    weights = list(vc["weights"]) if vc["weights"] is not None else [1.0] * n
    if len(weights) != n:
        raise ValueError(f"views.weights has {len(weights)} entries for {n} clients")
    opts = attack_options(cfg)
    seed = int(cfg["seed"])
    clip = float(vc["clip"])
    draws = int(cfg["noise_floor"]["draws"])
    observe = jax.jit(Gradient(problem.loss_fn))
    start = time.perf_counter()
    ring = max(n, COLLUSION_RING)
    ring_weights = weights + [float(np.mean(weights))] * (ring - n)
    crops = load_crops(vc["dataset"], n * trials, cfg, seed=seed + 2)
    # the coalition ring's extra hospitals hold crops of their own (a separate draw, so the
    # single-party views attack the same images whatever the ring size)
    extra = load_crops(vc["dataset"], (ring - n) * trials, cfg, seed=seed + 3) if ring > n else None
    # record_pair_secrets: the coalition views play colluding hospitals (simulation only)
    aggregator = SecureAggregator(
        vc["backend"], record_pair_secrets=True, **dict(vc["backend_options"] or {})
    )
    two_party = SecureAggregator("plain") if vc["two_party"] else None
    per_view: dict[str, list[dict]] = {}
    trial_out, figure = [], []
    collusion: dict[str, Any] = {}
    for t in range(trials):
        idx = list(range(t * n, (t + 1) * n))
        images = [crops.images[i] for i in idx]
        labels = [int(crops.labels[i]) for i in idx]
        pairs = list(zip(images, labels, strict=True))
        if extra is not None:
            more = range(t * (ring - n), (t + 1) * (ring - n))
            pairs += [(extra.images[i], int(extra.labels[i])) for i in more]
        all_updates = [
            jax.tree.map(np.asarray, observe(problem.params, jnp.asarray(x), jnp.asarray(y)))
            for x, y in pairs
        ]
        updates = all_updates[:n]
        pv = party_views(updates, weights, victim=0, clip=clip, aggregator=aggregator)
        observed = dict(pv.views)
        diagnostics = dict(pv.diagnostics)
        if two_party is not None:
            leak = party_views(updates[:2], weights[:2], victim=0, clip=clip, aggregator=two_party)
            observed["two_party_leak"] = leak.views["aggregate_minus_own"]
            diagnostics["two_party_leak"] = leak.diagnostics["aggregate_minus_own"]
        coalition_views, collusion = _collusion_round(
            all_updates, ring_weights, clip=clip, aggregator=aggregator, backend=vc["backend"]
        )
        for view, (tree, facts) in coalition_views.items():
            observed[view], diagnostics[view] = tree, facts
        floor = noise_floor(images[0], draws=draws, seed=seed + t)
        row = {"truth": images[0], "others": images[1:], "recs": {}}
        records = {}
        for view, tree in observed.items():
            rec = _attack_view(problem, tree, opts, seed + t)
            record = _record(rec, images[0], labels[0], floor)
            if view in ("aggregate", "aggregate_minus_own"):
                best = [psnr_score(rec.image, img) for img in images]
                record["psnr_each_client"] = best
                record["best_client"] = int(np.argmax(best))
            record["diagnostics"] = _numeric(diagnostics[view])
            records[view] = record
            per_view.setdefault(view, []).append(record)
            row["recs"][view] = (rec.image, record)
            emit(event="image", section="views", trial=t, view=view, **{
                k: v for k, v in record.items() if k != "diagnostics"})  # fmt: skip
        trial_out.append(
            {
                "sources": [crops.sources[i] for i in idx],
                "coalition_ring_extra_sources": []
                if extra is None
                else [extra.sources[i] for i in range(t * (ring - n), (t + 1) * (ring - n))],
                "labels": labels,
                "clipped": pv.clipped + collusion["clipped"],
                "records": records,
            }
        )
        figure.append(row)
    summary = {view: summarize(recs) for view, recs in per_view.items()}
    info = aggregator.backend.info()
    parsed = {
        view: {
            key: float(np.median([r["diagnostics"][key] for r in recs]))
            for key in recs[0]["diagnostics"]
        }
        for view, recs in per_view.items()
    }
    return {
        "dataset": vc["dataset"],
        "clients": n,
        "backend": aggregator.backend.name,
        "backend_info": {
            "modulus": info.modulus,
            "slots": info.slots,
            "security": info.security,
        },
        "clip": clip,
        "weights": weights,
        "victim": pv.victim,
        "next_client": pv.next_client,
        "observer": pv.observer,
        "collusion": {k: v for k, v in collusion.items() if k != "clipped"},
        "summary": summary,
        "diagnostics": parsed,
        "seconds": time.perf_counter() - start,
        "trials": trial_out,
    }, figure
