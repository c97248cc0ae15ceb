"""Choice of the initiator (the party that draws and removes the mask) for each round."""

from __future__ import annotations

import hashlib

from pppml_jax.secure.errors import InvalidOptionError

POLICIES = ("round_robin", "seeded")


def choose_initiator(policy: str, *, round_index: int, num_clients: int, seed: int | None) -> int:
    """Returns the index (into this round's client list) of the initiator.

    Args:
      policy: ``"round_robin"``: ``round_index % n`` (the paper's rule); ``"seeded"``: a
        SHA-256 hash of ``(seed, round_index)`` reduced modulo n, which every party can
        compute from the shared seed but nobody can steer.
      round_index: the federation round (>= 0).
      num_clients: n.
      seed: the shared seed; required by ``"seeded"``.

    Raises:
      InvalidOptionError: unknown policy, or ``"seeded"`` without a seed.
    """
    if policy == "round_robin":
        return round_index % num_clients
    if policy == "seeded":
        if seed is None:
            raise InvalidOptionError("initiator='seeded' needs seed=<int> shared by all parties")
        digest = hashlib.sha256(f"pppml-initiator:{int(seed)}:{round_index}".encode()).digest()
        return int.from_bytes(digest[:8], "little") % num_clients
    raise InvalidOptionError(f"initiator={policy!r}: choose one of {POLICIES}")
