"""Simulated faults for testing the ring: dropouts, tampering, injected messages.

Pass a list of them as ``faults=[...]`` to :func:`pppml_jax.secure.cyclic_aggregate`. Hops are
numbered per attempt: ring message ``h`` is sent by the party at ring position ``h`` (the
initiator is position 0, message ``n-1`` closes the ring back to it) and message ``n`` is the
result the initiator publishes. With the ``round_robin`` policy the party at position k of
round r is client ``(r + k) % n``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pppml_jax.secure.errors import InvalidOptionError
from pppml_jax.secure.messages import Message


@dataclass(frozen=True)
class Dropout:
    """Client ``client`` goes offline just before message ``hop`` of attempt ``attempt``.

    The relay notices when it must deliver a message to the client, or wait for one from it.
    A client that has already forwarded its sum (and is not the initiator) is no longer
    needed: the round completes with its contribution. Otherwise the round is re-formed
    without it, or aborted (``on_dropout``).
    """

    client: int
    hop: int = 0
    attempt: int = 0


@dataclass(frozen=True)
class Tamper:
    """The relay alters ring message ``hop``: flips one byte, or truncates it to half."""

    hop: int
    mode: Literal["flip", "truncate"] = "flip"
    offset: int | None = None
    attempt: int = 0


@dataclass(frozen=True)
class Inject:
    """The relay delivers another message instead of ring message ``hop``.

    Either ``message`` (e.g. recorded from an earlier call), or, with ``message=None``, the
    message of hop ``from_hop`` that the relay recorded earlier in this same call (a replay
    to another position).
    """

    hop: int
    message: Message | None = None
    attempt: int = 0
    from_hop: int | None = None


Fault = Dropout | Tamper | Inject


def validate_faults(faults: Sequence[Fault], num_clients: int) -> tuple[Fault, ...]:
    """Checks fault descriptions against the ring of ``num_clients`` clients.

    Raises:
      InvalidOptionError: an unknown fault type, a client out of range, or a hop that does
        not exist in attempt 0 (ring messages are ``0 .. n-1``; a dropout may name ``n``).
    """
    out = []
    for f in faults:
        if isinstance(f, Dropout):
            if not 0 <= f.client < num_clients:
                raise InvalidOptionError(f"{f}: client must be in [0, {num_clients})")
            if not 0 <= f.hop <= num_clients:
                raise InvalidOptionError(f"{f}: hop must be in [0, {num_clients}]")
        elif isinstance(f, (Tamper, Inject)):
            if not 0 <= f.hop < num_clients:
                raise InvalidOptionError(
                    f"{type(f).__name__} hop={f.hop}: ring hops are 0..{num_clients - 1}"
                )
            if isinstance(f, Tamper) and f.mode not in ("flip", "truncate"):
                raise InvalidOptionError(f"Tamper mode={f.mode!r}: use 'flip' or 'truncate'")
            # an Inject carries a Message, or replays an earlier hop of the same call
            replays_earlier = (
                isinstance(f, Inject)
                and f.message is None
                and isinstance(f.from_hop, int)
                and 0 <= f.from_hop < f.hop
            )
            if isinstance(f, Inject) and not isinstance(f.message, Message) and not replays_earlier:
                raise InvalidOptionError(
                    "Inject needs message=<a pppml_jax.secure.Message> or from_hop=<an "
                    "earlier hop of the same call>"
                )
        else:
            raise InvalidOptionError(f"fault {f!r}: use pppml_jax.secure.Dropout, Tamper or Inject")
        if f.attempt < 0:
            raise InvalidOptionError(f"{f}: attempt must be >= 0")
        out.append(f)
    return tuple(out)


def is_offline(faults: Sequence[Fault], client: int, *, attempt: int, hop: int) -> bool:
    """Whether ``client`` is offline when message ``hop`` of ``attempt`` is due."""
    return any(
        isinstance(f, Dropout)
        and f.client == client
        and (attempt > f.attempt or (attempt == f.attempt and hop >= f.hop))
        for f in faults
    )
