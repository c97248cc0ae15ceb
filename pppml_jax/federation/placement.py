"""Where a round's arrays live: the clients axis sharded over a device mesh, the rest replicated.

A 1-D ``jax.sharding.Mesh`` with axis ``"clients"`` spans the devices of the run: every local
device in one process, or every device of every process after ``jax.distributed.initialize``.
Client-stacked arrays (data, counts, keys, weights, per-client models) are split along their
leading axis; models and optimizer states are replicated. Arrays are built with
``jax.make_array_from_callback``, so each process only materialises its own devices' shards.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

CLIENTS_AXIS = "clients"


class Placement:
    """Puts client-stacked and replicated pytrees on a mesh of ``num_devices`` devices.

    Args:
      num_devices: how many of ``jax.devices()`` (global, in device order) to use; None: all.
    """

    def __init__(self, num_devices: int | None = None):
        devices = jax.devices()
        if num_devices is None:
            num_devices = len(devices)
        if not 1 <= num_devices <= len(devices):
            raise ValueError(
                f"devices={num_devices} but {len(devices)} devices are visible; use 1 to "
                f"{len(devices)} (or None for all)"
            )
        self.num_devices = num_devices
        self.mesh = Mesh(np.asarray(devices[:num_devices]), (CLIENTS_AXIS,))
        self.by_client = NamedSharding(self.mesh, P(CLIENTS_AXIS))
        self.replicated = NamedSharding(self.mesh, P())

    @property
    def sharded(self) -> bool:
        return self.num_devices > 1 or jax.process_count() > 1

    def put_clients(self, tree: Any) -> Any:
        """Host numpy pytree with leading clients axis (a multiple of num_devices) -> sharded."""
        return jax.tree.map(self._put_by_client, tree)

    def _put_by_client(self, x) -> jax.Array:
        x = np.asarray(x)
        if x.shape[0] % self.num_devices:
            raise ValueError(
                f"a clients axis of {x.shape[0]} does not split over {self.num_devices} devices"
            )
        return jax.make_array_from_callback(x.shape, self.by_client, lambda index: x[index])

    def put_replicated(self, tree: Any) -> Any:
        """Any pytree -> arrays replicated on every device of the mesh."""
        if not self.sharded:
            return jax.device_put(tree, self.replicated)

        def put(x):
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.replicated, lambda index: x[index])

        return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of a pytree of (possibly multi-process, sharded) arrays, on every process."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(fetch, tree)
