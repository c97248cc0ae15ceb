"""Measurement core of the secure-aggregation benchmark (no printing; see ``pppml bench secure``).

One *configuration* is a backend with its options, an update size and a number of clients.
:func:`measure` builds synthetic updates shaped like the paper's U-Net (or scaled to another
size), generates keys, runs one round and returns a flat dict of timings, bytes and errors.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pppml_jax.secure.aggregate import SecureAggregator, split_options

UNET_PARAMS = 1_944_049
"""Parameters of the paper's 2-D U-Net (4 levels, 16 features, conv bias + BatchNorm)."""


def unet_leaf_shapes(base: int = 16, levels: int = 4, in_ch: int = 3, out_ch: int = 1):
    """``[(name, shape)]`` of a 2-D U-Net's trainable leaves, named in network order.

    Names are ``params/L<k>_<Module>/<leaf>`` so that their natural order is the order of the
    layers (``encrypt="auto"`` then picks the true first and last layers).
    """
    shapes: list[tuple[str, tuple[int, ...]]] = []

    def add(module: str, leaves: dict[str, tuple[int, ...]]) -> None:
        name = f"params/L{len({n.split('/')[1] for n, _ in shapes}):02d}_{module}"
        shapes.extend((f"{name}/{k}", v) for k, v in leaves.items())

    def conv_block(cin: int, cout: int) -> None:
        for a, b in ((cin, cout), (cout, cout)):
            add("Conv", {"kernel": (3, 3, a, b), "bias": (b,)})
            add("BatchNorm", {"scale": (b,), "bias": (b,)})

    feats = [base * 2**i for i in range(levels + 1)]
    c = in_ch
    for f in feats:
        conv_block(c, f)
        c = f
    for f in reversed(feats[:-1]):
        add("ConvTranspose", {"kernel": (2, 2, c, f), "bias": (f,)})
        conv_block(2 * f, f)
        c = f
    add("Conv", {"kernel": (1, 1, c, out_ch), "bias": (out_ch,)})
    return shapes


def synthetic_shapes(num_params: int) -> list[tuple[str, tuple[int, ...]]]:
    """Leaf shapes with ``num_params`` values: the U-Net, or its leaves scaled (1-D)."""
    base = unet_leaf_shapes()
    if num_params == UNET_PARAMS:
        return base
    total = sum(math.prod(s) for _, s in base)
    sizes = [max(1, round(math.prod(s) * num_params / total)) for _, s in base]
    sizes[int(np.argmax(sizes))] += num_params - sum(sizes)
    return [(name, (size,)) for (name, _), size in zip(base, sizes, strict=True)]


def synthetic_updates(
    num_params: int, num_clients: int, *, seed: int = 0
) -> tuple[list[dict], list[float]]:
    """Float32 model deltas ~ N(0, 0.01^2) in U-Net-shaped dicts, and sample-count weights."""
    rng = np.random.default_rng(seed)
    shapes = synthetic_shapes(num_params)
    updates = [
        {name: (rng.standard_normal(shape) * 0.01).astype(np.float32) for name, shape in shapes}
        for _ in range(num_clients)
    ]
    weights = rng.integers(50, 200, num_clients).astype(float).tolist()
    return updates, weights


@dataclass(frozen=True)
class Config:
    """One benchmark configuration.

    Attributes:
      label: name in tables (e.g. ``bfv``, ``paper-ckks``, ``concrete-selective``).
      backend: backend name.
      num_params: values per update.
      num_clients: n.
      options: backend and protocol options passed to the aggregator.
    """

    label: str
    backend: str
    num_params: int
    num_clients: int
    options: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "backend": self.backend,
            "num_params": self.num_params,
            "num_clients": self.num_clients,
            "options": dict(self.options),
        }


def measure(config: Config, *, seed: int = 0) -> dict[str, Any]:
    """Runs one round of ``config`` and returns its measurements.

    Returns:
      A flat dict: the configuration, ``keygen_s``; ``encrypt_s`` (mean per client),
      ``hop_s`` (median wall time of a non-initiator's step: check, deserialize, encrypt,
      add, serialize), ``decrypt_s``, ``total_s`` (end to end, every party simulated in this
      process in turn); ``bytes_per_param`` (one ring link), ``ring_mb`` (all partial sums);
      ``max_error`` (against the float64 weighted mean) and ``error_bound``;
      ``encrypted_params``; ``peak_rss_mb`` of this process.
    """
    updates, weights = synthetic_updates(config.num_params, config.num_clients, seed=seed)
    backend_opts, ring_opts = split_options(config.backend, config.options)
    t0 = time.perf_counter()
    aggregator = SecureAggregator(config.backend, **backend_opts)
    _ = aggregator.keys
    keygen_s = time.perf_counter() - t0
    res = aggregator.aggregate(updates, weights, round_index=0, seed=seed, **ring_opts)
    p = np.asarray(weights) / np.sum(weights)
    max_error = 0.0
    for name in updates[0]:
        ref = sum(pi * u[name].astype(np.float64) for pi, u in zip(p, updates, strict=True))
        err = np.max(np.abs(res.aggregate[name].astype(np.float64) - ref))
        max_error = max(max_error, float(err))
    s = res.stats
    hops = s.hop_seconds[1:] or s.hop_seconds
    row = config.as_dict()
    row.update(
        keygen_s=keygen_s,
        encrypt_s=s.seconds.get("encrypt", 0.0) / config.num_clients,
        hop_s=float(np.median(hops)),
        decrypt_s=s.seconds.get("decrypt", 0.0),
        total_s=s.seconds["total"],
        bytes_per_param=s.bytes_per_param,
        ring_mb=s.ring_bytes / 1e6,
        max_error=max_error,
        error_bound=s.error_bound,
        encrypted_params=s.encrypted_params,
        security=s.backend.security,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return row
