"""Per-round client sampling, seeded by (seed, round) so that any round can be replayed."""

from __future__ import annotations

import numpy as np


def num_sampled(num_clients: int, clients_per_round: int | float | None) -> int:
    """How many clients a round samples: all (None), an int (capped at K) or a fraction of K.

    A fraction rounds to the nearest integer, at least 1.
    """
    if clients_per_round is None:
        return num_clients
    if isinstance(clients_per_round, float):
        return max(1, min(num_clients, round(clients_per_round * num_clients)))
    return min(num_clients, int(clients_per_round))


def sample_clients(
    num_clients: int, clients_per_round: int | float | None, *, seed: int, round_index: int
) -> np.ndarray:
    """Ids of the clients of one round, drawn uniformly without replacement, ascending.

    Args:
      num_clients: K, the federation's size.
      clients_per_round: see :func:`num_sampled`.
      seed: the run's seed.
      round_index: 0-based round index.

    Returns:
      ``[m]`` int64 ascending client ids; all clients (``arange(K)``) when m == K.
    """
    m = num_sampled(num_clients, clients_per_round)
    if m == num_clients:
        return np.arange(num_clients)
    rng = np.random.default_rng([seed, round_index, 0x5A3])
    return np.sort(rng.choice(num_clients, size=m, replace=False))
