"""Who trains when, with which keys: client sampling, PRNG streams and chunks of clients.

Every random choice of a run derives from its seed: a round's key is
``fold_in(key(seed), round)``, a client's is ``fold_in(fold_in(round key, stream), client)``,
so a run restored from a checkpoint continues exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import numpy as np

from pppml_jax.federation.clients import ClientBlock
from pppml_jax.federation.placement import Placement
from pppml_jax.federation.sampling import sample_clients

TRAIN_STREAM, EVAL_STREAM = 1, 2


@jax.jit
def _client_key_data(base: jax.Array, round_index, stream, ids) -> jax.Array:
    """``[len(ids), 2]`` uint32: fold_in(fold_in(fold_in(base, round), stream), id) per id.

    One compiled program (per number of ids) for every seed and round: ``base`` is the seed
    key's data, ``round_index`` and ``stream`` int32 arguments.
    """
    key = jax.random.fold_in(jax.random.wrap_key_data(base), round_index)
    key = jax.random.fold_in(key, stream)
    return jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(ids))


class Chunk(NamedTuple):
    """The clients one compiled program handles (one client in loop execution)."""

    real: np.ndarray  # [c] int: ids of the real clients, ascending
    ids: Any  # [] int32 (loop) or [C] int32, padded with the dummy id K (vmap)
    keys: Any  # [2] or [C, 2] uint32: the clients' key data
    weights: Any  # [] or [C] float32: sample counts (0 for padding clients)
    data: Any  # every client's data ([K, N, ...], gather) or this chunk's ([C, N, ...] / [N, ...])
    counts: Any  # numbers of real examples, laid out like data's leading axes
    gather: bool  # data holds every client: the program takes rows ``ids``


class Schedule:
    """Sampling, keys and chunking of one federation.

    Args:
      num_clients: K.
      clients_per_round: None (all), an int, or a fraction in (0, 1].
      seed: the run's seed.
      batched: vmap execution (chunks of ``chunk_size`` clients) or loop (one client each).
      chunk_size: clients per vmap chunk (a multiple of the placement's devices).
      placement: where client-stacked arrays go.
      weights: ``[K]`` float32 aggregation weights (training-sample counts).
    """

    def __init__(
        self,
        num_clients: int,
        clients_per_round: int | float | None,
        seed: int,
        *,
        batched: bool,
        chunk_size: int,
        placement: Placement,
        weights: np.ndarray,
    ):
        self.num_clients = num_clients
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.batched = batched
        self.chunk_size = chunk_size
        self.placement = placement
        self.weights = weights
        self._base_key = jax.random.key(seed)
        self._base_data = np.asarray(jax.random.key_data(self._base_key))

    def round_key(self, round_index: int) -> jax.Array:
        """The PRNG key of round ``round_index`` (0-based)."""
        return jax.random.fold_in(self._base_key, round_index)

    def client_keys(self, round_index: int, stream: int, ids: np.ndarray) -> np.ndarray:
        """``[len(ids), 2]`` uint32 key data: fold_in(fold_in(round key, stream), client id)."""
        ids = np.asarray(ids, np.int32)
        out = _client_key_data(self._base_data, np.int32(round_index), np.int32(stream), ids)
        return np.asarray(out)

    def sampled(self, round_index: int) -> np.ndarray:
        """Ids of the clients taking part in round ``round_index`` (ascending)."""
        return sample_clients(
            self.num_clients, self.clients_per_round, seed=self.seed, round_index=round_index
        )

    def chunks(
        self,
        ids: np.ndarray,
        key_data: np.ndarray,
        block: ClientBlock,
        resident: tuple[Any, Any] | None,
        send_small: bool = True,
    ) -> Iterator[Chunk]:
        """The chunks of clients ``ids`` over ``block``'s data.

        Chunks of vmap execution are padded with dummy clients (id K, weight 0) to one size, so
        one compiled program serves every chunk. ``resident``: ``(data, counts)`` of every
        client already on the device (then programs gather rows), or None (the chunk's rows
        are sent). ``send_small`` (loop execution): put each client's id, key and weight on
        the device first (for programs called once per local step), or leave them numpy
        scalars for the one program that takes them (cheaper than a separate transfer).
        """
        if not self.batched:
            yield from self._loop_chunks(ids, key_data, block, resident, send_small)
            return
        size = self.chunk_size
        for start in range(0, len(ids), size):
            real = ids[start : start + size]
            keys = key_data[start : start + size]
            pad = size - len(real)
            padded = np.concatenate([real, np.full(pad, self.num_clients)]).astype(np.int32)
            padded_keys = np.concatenate([keys, np.repeat(keys[:1], pad, axis=0)])
            weights = np.concatenate([self.weights[real], np.zeros(pad, np.float32)])
            put = self.placement.put_clients
            if resident is not None:
                data, counts = resident
                gather = True
            else:
                rows = np.minimum(padded, self.num_clients - 1)
                data = put({n: v[rows] for n, v in block.data.items()})
                counts = put(block.num_examples[rows])
                gather = False
            yield Chunk(
                real,
                put(padded),
                put(padded_keys),
                put(weights.astype(np.float32)),
                data,
                counts,
                gather,
            )

    def _loop_chunks(self, ids, key_data, block, resident, send_small) -> Iterator[Chunk]:
        """One chunk per client (loop execution), its small arrays sent in one transfer.

        With step programs a client's program runs once per local step: its id, key and
        weight (and, with host placement, its data) go to the device once, not once per step.
        """
        small = [(np.int32(k), key_data[j], np.float32(self.weights[k])) for j, k in enumerate(ids)]
        if send_small:
            small = jax.device_put(small)
        for j, k in enumerate(ids):
            real = ids[j : j + 1]
            if resident is not None:
                yield Chunk(real, *small[j], *resident, True)
            else:
                data = {n: v[int(k)] for n, v in block.data.items()}
                data, count = jax.device_put((data, block.num_examples[int(k)]))
                yield Chunk(real, *small[j], data, count, False)
