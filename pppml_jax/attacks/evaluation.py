"""The privacy evaluation: iDLG against plain FedAvg and against every party's view of PPPML-HMI.

Three experiments, all on a LeNet with sigmoid activations (the iDLG reference network) and
32x32 single-channel CT crops, deterministic from one seed:

1. ``reference``: iDLG on the plain gradient of one image (batch of 1), for synthetic and
   real CT; label accuracy and PSNR / SSIM per image.
2. ``local_update``: the model difference a FedAvg client sends after K local SGD steps on
   its image, attacked by matching the simulated K-step update.
3. ``views``: n clients each hold one image and send its gradient; one real round of cyclic
   secure aggregation gives every party's view (:mod:`pppml_jax.attacks.views`), each
   attacked like a plain gradient; plus the two-client ring, where the other client recovers
   the victim's update exactly.

:func:`evaluate` takes a config (:data:`DEFAULTS` shows every key) and returns the JSON-ready
results and the images of the figures; the ``pppml attack`` command writes and draws them.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pppml_jax.attacks.crops import Crops, real_ct_crops, synthetic_crops
from pppml_jax.attacks.idlg import Reconstruction, idlg, idlg_update
from pppml_jax.attacks.observations import Gradient, LocalUpdate
from pppml_jax.attacks.scoring import noise_floor, psnr_score, scores, summarize
from pppml_jax.attacks.views import party_views

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "model": {"num_classes": 2, "activation": "sigmoid", "init_range": 0.5},
    "attack": {
        "steps": 2000,
        "restarts": 1,
        "tol": 1e-8,
        "memory_size": 100,
        "patience": 20,
        "tv_weight": 0.0,
        "distance": "l2",
        "init": "uniform",
        "solver": "lbfgs",
        "max_move": 0.5,
    },
    "data": {
        "crop_size": 32,
        "window_hu": [-1000.0, 400.0],
        "synthetic": {"profiles": "quickstart", "image_size": 64},
        "real_ct": {"root": None, "download": True, "slice_size": 128},
    },
    "reference": {"datasets": ["synthetic", "real_ct"], "images": 20},
    "local_update": {"dataset": "synthetic", "images": 4, "local_steps": 5, "lr": 0.1},
    "views": {
        "dataset": "synthetic",
        "clients": 3,
        "trials": 4,
        "weights": None,
        "backend": "bfv",
        "backend_options": {},
        "clip": 4.0,
        "two_party": True,
    },
    "noise_floor": {"draws": 64},
}
"""Every config key and its default (``pppml attack`` reads YAML with these keys)."""

DATASETS = ("synthetic", "real_ct")

VIEW_TITLES = {
    "plain": "FedAvg server: the client's gradient",
    "relay": "relay: ciphertext bytes read as float32",
    "next_client": "next client: decrypted masked running sum",
    "aggregate": "every client: the aggregate of n clients",
    "aggregate_minus_own": "a client: aggregate minus its own update",
    "two_party_leak": "ring of 2: aggregate minus own update",
}
"""What each view is, in the words of the results table."""

_FREE_FORM = {("views", "backend_options")}


def merge_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Returns :data:`DEFAULTS` updated by ``config`` (nested), refusing unknown keys.

    Raises:
      ValueError: a key that :data:`DEFAULTS` does not have (named with its dotted path).
    """

    def merge(base: dict[str, Any], over: Mapping[str, Any], path: tuple[str, ...]):
        out = copy.deepcopy(base)
        for key, value in over.items():
            if key not in base:
                dotted = ".".join((*path, str(key)))
                raise ValueError(f"unknown config key {dotted!r}; known keys here: {sorted(base)}")
            sub = (*path, key)
            if isinstance(base[key], dict) and sub not in _FREE_FORM:
                if not isinstance(value, Mapping):
                    raise ValueError(f"config key {'.'.join(sub)!r} must be a mapping")
                out[key] = merge(base[key], value, sub)
            else:
                out[key] = copy.deepcopy(value)
        return out

    return merge(DEFAULTS, config or {}, ())


@dataclass(frozen=True)
class Problem:
    """The attacked model: LeNet parameters and the per-example loss the clients use.

    Attributes:
      params: Flax ``params`` of the LeNet at initialisation (the global model).
      loss_fn: ``loss_fn(params, x [H, W, C], label) -> scalar`` softmax cross-entropy (one
        object, so every attack reuses its compilation).
      input_shape: ``(H, W, C)``.
      num_classes: number of classes.
    """

    params: Any
    loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array]
    input_shape: tuple[int, int, int]
    num_classes: int


def lenet_problem(model: Mapping[str, Any], *, crop_size: int, seed: int) -> Problem:
    """Builds the LeNet of ``model`` (``num_classes``, ``activation``, ``init_range``)."""
    from pppml_jax.models import LeNet

    net = LeNet(
        num_classes=int(model["num_classes"]),
        activation=model["activation"],
        init_range=model["init_range"],
    )
    shape = (crop_size, crop_size, 1)
    params = net.init(jax.random.key(seed), jnp.zeros((1, *shape)))["params"]

    def loss_fn(p, x, label):
        logits = net.apply({"params": p}, x[None])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, label)

    return Problem(params, loss_fn, shape, int(model["num_classes"]))


def load_crops(name: str, num: int, cfg: Mapping[str, Any], *, seed: int) -> Crops:
    """``num`` crops of dataset ``name`` (``"synthetic"`` or ``"real_ct"``) as ``cfg["data"]``."""
    data = cfg["data"]
    window = tuple(float(v) for v in data["window_hu"])
    size = int(data["crop_size"])
    if name == "synthetic":
        opts = data["synthetic"]
        return synthetic_crops(
            num, size=size, image_size=int(opts["image_size"]), profiles=opts["profiles"],
            window=window, seed=seed,
        )  # fmt: skip
    if name == "real_ct":
        opts = data["real_ct"]
        return real_ct_crops(
            num, root=opts["root"], download=bool(opts["download"]), size=size,
            slice_size=int(opts["slice_size"]), window=window, seed=seed,
        )  # fmt: skip
    raise ValueError(f"dataset {name!r} is not one of {DATASETS}")


def _record(rec: Reconstruction, truth: np.ndarray, label: int, floor: dict) -> dict[str, Any]:
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


def _attack_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    a = cfg["attack"]
    return {
        "steps": int(a["steps"]),
        "restarts": int(a["restarts"]),
        "tol": float(a["tol"]),
        "memory_size": int(a["memory_size"]),
        "patience": int(a["patience"]),
        "tv_weight": float(a["tv_weight"]),
        "distance": a["distance"],
        "init": a["init"],
        "solver": a["solver"],
        "max_move": None if a["max_move"] is None else float(a["max_move"]),
    }


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (other processes share the CPU), if known."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class _Emitter:
    def __init__(self, progress: Callable[[dict], None] | None):
        self.progress = progress

    def __call__(self, **event: Any) -> None:
        if self.progress is not None:
            self.progress(event)


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
    opts = _attack_options(cfg)
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
    opts = _attack_options(cfg)
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


def run_views(problem: Problem, cfg: Mapping[str, Any], emit: Callable[..., None]):
    """Experiment 3: every party's view of one round of CSA, and the two-client leak."""
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
    opts = _attack_options(cfg)
    seed = int(cfg["seed"])
    clip = float(vc["clip"])
    draws = int(cfg["noise_floor"]["draws"])
    observe = jax.jit(Gradient(problem.loss_fn))
    start = time.perf_counter()
    crops = load_crops(vc["dataset"], n * trials, cfg, seed=seed + 2)
    aggregator = SecureAggregator(vc["backend"], **dict(vc["backend_options"] or {}))
    two_party = SecureAggregator("plain") if vc["two_party"] else None
    per_view: dict[str, list[dict]] = {}
    trial_out, figure = [], []
    for t in range(trials):
        idx = list(range(t * n, (t + 1) * n))
        images = [crops.images[i] for i in idx]
        labels = [int(crops.labels[i]) for i in idx]
        updates = [
            jax.tree.map(np.asarray, observe(problem.params, jnp.asarray(x), jnp.asarray(y)))
            for x, y in zip(images, labels, strict=True)
        ]
        pv = party_views(updates, weights, victim=0, clip=clip, aggregator=aggregator)
        observed = dict(pv.views)
        diagnostics = dict(pv.diagnostics)
        if two_party is not None:
            leak = party_views(updates[:2], weights[:2], victim=0, clip=clip, aggregator=two_party)
            observed["two_party_leak"] = leak.views["aggregate_minus_own"]
            diagnostics["two_party_leak"] = leak.diagnostics["aggregate_minus_own"]
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
            record["diagnostics"] = diagnostics[view]
            records[view] = record
            per_view.setdefault(view, []).append(record)
            row["recs"][view] = (rec.image, record)
            emit(event="image", section="views", trial=t, view=view, **{
                k: v for k, v in record.items() if k != "diagnostics"})  # fmt: skip
        trial_out.append(
            {
                "sources": [crops.sources[i] for i in idx],
                "labels": labels,
                "clipped": pv.clipped,
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
        "summary": summary,
        "diagnostics": parsed,
        "seconds": time.perf_counter() - start,
        "trials": trial_out,
    }, figure


def results_table(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per attacked view: who holds it, median PSNR / SSIM, label accuracy, floor."""
    rows = []
    for name, block in results.get("reference", {}).items():
        s = block["summary"]
        rows.append({"view": f"FedAvg gradient ({name}, reference)", **_row(s)})
    if results.get("local_update"):
        lu = results["local_update"]
        rows.append(
            {
                "view": f"FedAvg update after {lu['local_steps']} local steps ({lu['dataset']})",
                **_row(lu["summary"]),
            }
        )
    for view, s in results.get("views", {}).get("summary", {}).items():
        rows.append({"view": VIEW_TITLES.get(view, view), "key": view, **_row(s)})
    return rows


def _row(s: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("n", "label_accuracy", "psnr_median", "psnr_min", "psnr_max", "ssim_median",
            "psnr_best_client_median",
            "floor_psnr_median", "floor_ssim_median", "above_floor")  # fmt: skip
    return {k: s[k] for k in keys if k in s}


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate` returns.

    Attributes:
      results: JSON-ready dict (config, machine, per-experiment summaries and per-image
        records, ``table``, ``seconds``).
      figures: images for the plots: ``reference`` (dataset -> list of (truth, reconstruction,
        record)), ``local_update`` (list of the same), ``views`` (one row per trial: ``truth``,
        ``others`` and ``recs`` view -> (reconstruction, record)).
    """

    results: dict[str, Any]
    figures: dict[str, Any]


def evaluate(
    config: Mapping[str, Any] | None = None, *, progress: Callable[[dict], None] | None = None
) -> Evaluation:
    """Runs the privacy evaluation of a config (see :data:`DEFAULTS` and the module doc).

    Args:
      config: nested mapping of the keys of :data:`DEFAULTS` (missing keys take defaults).
      progress: called with one dict per event (``{"event": "image", "section": ...}``).

    Returns:
      An :class:`Evaluation`.

    Raises:
      ValueError: an unknown config key or a bad value.
    """
    cfg = merge_config(config)
    for name in cfg["reference"]["datasets"]:
        if name not in DATASETS:
            raise ValueError(f"reference.datasets entry {name!r} is not one of {DATASETS}")
    emit = _Emitter(progress)
    total = time.perf_counter()
    problem = lenet_problem(cfg["model"], crop_size=int(cfg["data"]["crop_size"]),
                            seed=int(cfg["seed"]))  # fmt: skip
    results: dict[str, Any] = {
        "config": cfg,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "jax": jax.__version__,
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(),
            "load_average_at_start": _load_average(),
        },
        "num_params": int(sum(np.size(x) for x in jax.tree.leaves(problem.params))),
    }
    figures: dict[str, Any] = {}
    seconds = {}
    for section, runner in (
        ("reference", run_reference),
        ("local_update", run_local_update),
        ("views", run_views),
    ):
        start = time.perf_counter()
        emit(event="section", section=section)
        results[section], figures[section] = runner(problem, cfg, emit)
        seconds[section] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - total
    results["seconds"] = seconds
    results["machine"]["load_average_at_end"] = _load_average()
    results["table"] = results_table(results)
    return Evaluation(results, figures)
