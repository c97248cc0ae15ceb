"""Clients with unequal sample counts, stacked into one padded block with per-client counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np


class ClientBlock(NamedTuple):
    """Every client's examples padded to one length, as FedJAX's ``ClientBlock``.

    Attributes:
      data: dict of ``[K, N, ...]`` numpy arrays (K clients, N = the largest client's count or
        more); rows ``>= num_examples[k]`` of client ``k`` are zero padding and never read.
      num_examples: ``[K]`` int32, each client's number of real examples.
    """

    data: dict[str, np.ndarray]
    num_examples: np.ndarray

    @property
    def num_clients(self) -> int:
        return int(self.num_examples.shape[0])

    @property
    def capacity(self) -> int:
        """The padded length N of the examples axis."""
        return int(next(iter(self.data.values())).shape[1])

    @property
    def mask(self) -> np.ndarray:
        """``[K, N]`` bool, True on real examples (the per-example mask)."""
        return np.arange(self.capacity)[None, :] < self.num_examples[:, None]

    def select(self, indices: Sequence[int] | np.ndarray) -> ClientBlock:
        """The block of clients ``indices`` (in that order)."""
        idx = np.asarray(indices, dtype=np.int64)
        return ClientBlock({k: v[idx] for k, v in self.data.items()}, self.num_examples[idx])


def _client_length(client: Mapping[str, np.ndarray], index: int, what: str) -> int:
    lengths = {key: np.shape(value)[0] if np.ndim(value) else None for key, value in client.items()}
    if any(n is None for n in lengths.values()):
        scalar = [k for k, n in lengths.items() if n is None]
        raise ValueError(
            f"{what}[{index}] has scalar entries {scalar}: "
            "every entry needs a leading examples axis"
        )
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"{what}[{index}] entries disagree on the number of examples: {lengths}; "
            "every array of one client must have the same leading length"
        )
    return next(iter(lengths.values()))


def stack_clients(
    clients: Sequence[Mapping[str, np.ndarray]],
    *,
    capacity: int | None = None,
    what: str = "clients",
    allow_empty: bool = False,
) -> ClientBlock:
    """Stacks a list of per-client dicts of arrays into a zero-padded :class:`ClientBlock`.

    Args:
      clients: one dict per client, all with the same keys; each value ``[n_k, ...]`` with the
        same trailing shape and dtype across clients; ``n_k`` may differ between clients.
      capacity: pad the examples axis to this length (default: the largest ``n_k``). Padding
        further never changes a result; it lets differently sized federations share a program.
      what: the argument's name, used in error messages.
      allow_empty: accept clients with no examples (test splits may be empty).

    Returns:
      The padded block.

    Raises:
      ValueError: on an empty list, mismatched keys, trailing shapes or dtypes, an empty client,
        or a ``capacity`` smaller than the largest client.
    """
    if len(clients) == 0:
        raise ValueError(f"{what} is empty: pass at least one client")
    keys = sorted(clients[0].keys())
    if not keys:
        raise ValueError(f"{what}[0] has no arrays")
    lengths = []
    for k, client in enumerate(clients):
        if not isinstance(client, Mapping):
            raise ValueError(
                f"{what}[{k}] is a {type(client).__name__}; each client must be a dict of arrays"
            )
        if sorted(client.keys()) != keys:
            raise ValueError(
                f"{what}[{k}] has keys {sorted(client.keys())} but {what}[0] has {keys}; "
                "all clients need the same keys"
            )
        n = _client_length(client, k, what)
        if n == 0 and not allow_empty:
            raise ValueError(f"{what}[{k}] has no examples; drop it or give it data")
        lengths.append(n)
    longest = max(lengths)
    if capacity is None:
        capacity = max(longest, 1)
    elif capacity < longest:
        raise ValueError(f"capacity={capacity} is smaller than the largest client ({longest})")
    data = {}
    for key in keys:
        first = np.asarray(clients[0][key])
        trailing, dtype = first.shape[1:], first.dtype
        out = np.zeros((len(clients), capacity, *trailing), dtype=dtype)
        for k, client in enumerate(clients):
            value = np.asarray(client[key])
            if value.shape[1:] != trailing:
                raise ValueError(
                    f"{what}[{k}][{key!r}] has per-example shape {value.shape[1:]} but "
                    f"{what}[0][{key!r}] has {trailing}"
                )
            if value.dtype != dtype:
                raise ValueError(
                    f"{what}[{k}][{key!r}] has dtype {value.dtype} but {what}[0][{key!r}] has "
                    f"{dtype}; cast them to one dtype"
                )
            out[k, : value.shape[0]] = value
        data[key] = out
    return ClientBlock(data, np.asarray(lengths, dtype=np.int32))


def check_finite_data(block: ClientBlock, what: str) -> None:
    """Raises ``ValueError`` naming the client, example and key of the first NaN or inf.

    Checks one client at a time, so the temporary memory is one client's data.
    """
    for key, values in block.data.items():
        if not np.issubdtype(values.dtype, np.inexact):
            continue
        for k in range(values.shape[0]):
            rows = values[k, : block.num_examples[k]]
            bad = ~np.isfinite(rows.reshape(rows.shape[0], -1)).all(axis=1)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"{what}[{k}][{key!r}] example {i} is not finite (NaN or inf); "
                    f"{int(bad.sum())} example(s) of this client: clean or drop them first"
                )


def as_client_block(
    clients: Sequence[Mapping[str, np.ndarray]] | ClientBlock,
    *,
    what: str,
    allow_empty: bool = False,
    finite: bool = False,
) -> ClientBlock:
    """``clients`` as a :class:`ClientBlock` (stacked by :func:`stack_clients` if a list).

    Args:
      finite: refuse NaN or infinite values in real (unpadded) examples.

    Raises:
      ValueError: on one stacked dict instead of a list of per-client dicts (with the fix),
        or anything :func:`stack_clients` refuses.
    """
    if isinstance(clients, Mapping):
        raise ValueError(
            f"{what} is one dict (keys {sorted(clients)}); pass a list with one dict per "
            f"client, e.g. [{{k: v[i] for k, v in d.items()}} for i in range(num_clients)], "
            "or a ClientBlock"
        )
    block = (
        clients
        if isinstance(clients, ClientBlock)
        else stack_clients(clients, what=what, allow_empty=allow_empty)
    )
    if finite:
        check_finite_data(block, what)
    return block


def test_block(
    test_clients: Sequence[Mapping[str, np.ndarray]] | ClientBlock,
    num_clients: int,
    eval_batch_size: int,
) -> tuple[ClientBlock, int]:
    """The test data as a block padded to a multiple of its evaluation chunk, and the chunk.

    Raises:
      ValueError: if the number of test splits differs from ``num_clients``.
    """
    block = as_client_block(test_clients, what="test_clients", allow_empty=True)
    if block.num_clients != num_clients:
        raise ValueError(
            f"test_clients has {block.num_clients} clients but clients has {num_clients}; "
            "give one test split per client"
        )
    chunk = min(eval_batch_size, block.capacity)
    padded = -(-block.capacity // chunk) * chunk
    if padded == block.capacity:
        return block, chunk
    extra = padded - block.capacity
    data = {
        k: np.pad(v, [(0, 0), (0, extra)] + [(0, 0)] * (v.ndim - 2)) for k, v in block.data.items()
    }
    return ClientBlock(data, block.num_examples), chunk
