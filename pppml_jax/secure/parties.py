"""The hospitals of the ring: each holds its own update, the shared ring keys and its pair keys.

Size: about 440 lines, over the project's 400, because a hospital's protocol steps (start,
forward, reseal, reveal, finish) share the checks of every incoming message and are kept
side by side so that a reviewer reads each party's whole behaviour in one place.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pppml_jax.secure import masking
from pppml_jax.secure.backends.base import Backend
from pppml_jax.secure.errors import (
    MalformedCiphertextError,
    ReplayedMessageError,
    UnexpectedMessageError,
    WrongContextError,
    WrongRoundError,
    WrongSenderError,
)
from pppml_jax.secure.keys import HospitalKeys
from pppml_jax.secure.messages import (
    RELAY,
    Envelope,
    Message,
    open_sealed,
    pack_sections,
    seal,
    unpack_sections,
)
from pppml_jax.secure.pairwise import PairParty, PairPublic, dropped_masks, rebuild_private
from pppml_jax.secure.quantize import QuantSpec, centered, quantize
from pppml_jax.secure.relay import PhaseTimer
from pppml_jax.secure.tree import Layout

ZERO_EXPONENT = -32768
"""Range announcement of an all-zero leaf (int16)."""


@dataclass(frozen=True)
class Channel:
    """One part of the update and how it travels.

    Attributes:
      name: ``"encrypted"`` (through the encryption backend) or ``"masked"`` (masked only).
      backend: the backend that carries it.
      layout: which leaves, where in the channel vector.
      pads: whether relay pads are added (masked-only channels).
      pairwise: whether pairwise masks are added (backends with exact modular sums).
    """

    name: str
    backend: Backend
    layout: Layout
    pads: bool
    pairwise: bool = False


@dataclass(frozen=True)
class Attempt:
    """Public facts of one attempt, known to every party.

    Attributes:
      round_index, attempt: where in the federation.
      order: the ring (client indices, initiator first).
      fractions: public weight fraction ``p_i`` of each member (sum 1 over ``order``).
      specs: quantisation per channel (clip range 1: values are divided by ``ranges`` first).
      session: the call's 16-byte session id.
      context: :func:`~pppml_jax.secure.messages.context_digest` of this attempt.
      ranges: per channel, ``[length]`` fixed-point range of every coordinate (update units).
      threshold: t of the pairwise Shamir shares (0 without pairwise masks).
    """

    round_index: int
    attempt: int
    order: tuple[int, ...]
    fractions: dict[int, float]
    specs: dict[str, QuantSpec]
    session: bytes
    context: bytes
    ranges: dict[str, np.ndarray]
    threshold: int = 0

    @property
    def n(self) -> int:
        return len(self.order)


def leaf_exponents(leaves: Sequence[np.ndarray]) -> np.ndarray:
    """``[L]`` int16 e with ``2**e >= max|leaf|`` (``ZERO_EXPONENT`` for all-zero leaves)."""
    out = np.full(len(leaves), ZERO_EXPONENT, np.int16)
    for i, leaf in enumerate(leaves):
        m = float(np.max(np.abs(leaf))) if leaf.size else 0.0
        if m > 0:
            out[i] = int(np.frexp(m)[1])  # m = f * 2**e with f in [0.5, 1): 2**e > m
    return out


class Hospital:
    """A hospital: holds its own update, the hospitals' shared keys and its pair keys.

    Args:
      index: client index (position in the caller's ``updates`` list).
      leaves: its own flat update leaves (float64).
      keys: the hospitals' :class:`HospitalKeys`.
      channels: the channels of this round.
      timer: phase timer shared by the simulation (bookkeeping only).
      stochastic_seed: seed of its stochastic rounding (``None``: OS entropy).
      pair: its pairwise material of this session (``None`` without pairwise masks).
    """

    def __init__(
        self,
        index: int,
        leaves: Sequence[np.ndarray],
        keys: HospitalKeys,
        channels: Sequence[Channel],
        timer: PhaseTimer,
        stochastic_seed: Sequence[int] | None,
        pair: PairParty | None = None,
    ) -> None:
        self.index = index
        self._leaves = leaves
        self._keys = keys
        self._channels = channels
        self._timer = timer
        self._stochastic_seed = stochastic_seed
        self.pair = pair
        self._mask: dict[str, np.ndarray] = {}
        self._last_sent: tuple[int, bytes] | None = None
        self.clipped = 0
        self.excess = 0.0

    def _where(self, att: Attempt, hop: int) -> str:
        return f"round {att.round_index}, attempt {att.attempt}: client {self.index} at hop {hop}"

    def _rng(self, att: Attempt, channel: Channel) -> np.random.Generator:
        """Stochastic rounding's generator: one stream per attempt, client and channel."""
        if self._stochastic_seed is None:
            return np.random.default_rng(secrets.randbits(128))
        stream = 0 if channel.name == "encrypted" else 1
        return np.random.default_rng([*self._stochastic_seed, att.attempt, self.index, stream])

    # ------------------------------------------------------------------ messages
    def send(
        self, att: Attempt, hop: int, receiver: int | str, kind: str, sections: dict[str, bytes]
    ) -> Message:
        """Seals ``sections`` for ``receiver`` under the ring's MAC key, session and context."""
        with self._timer.phase("authenticate"):
            return seal(
                self._keys.mac_key,
                sender=self.index,
                receiver=receiver,
                kind=kind,
                round_index=att.round_index,
                attempt=att.attempt,
                hop=hop,
                body=pack_sections(sections),
                session=att.session,
                context=att.context,
            )

    def open(
        self, att: Attempt, message: Message, *, kind: str, hop: int, sender: int, receiver=None
    ) -> Envelope:
        """Checks tag, round, session, context, sender, receiver, attempt, hop and kind.

        Raises:
          TamperedMessageError: failed authentication or truncated.
          WrongRoundError / ReplayedMessageError: from another round / another call.
          WrongContextError: from this call but another ring order or weights.
          WrongSenderError / UnexpectedMessageError: not the message expected now.
        """
        where = self._where(att, hop)
        with self._timer.phase("authenticate"):
            env = open_sealed(self._keys.mac_key, message.payload, where=where)
        if env.round_index != att.round_index:
            raise WrongRoundError(
                f"{where}: message belongs to round {env.round_index}, not {att.round_index} "
                "(replayed)"
            )
        if env.session != att.session:
            raise ReplayedMessageError(
                f"{where}: message belongs to session {env.session.hex()[:8]}..., not this "
                f"call's {att.session.hex()[:8]}... (replayed from another call)"
            )
        if env.attempt != att.attempt:
            raise UnexpectedMessageError(
                f"{where}: message of attempt {env.attempt}, expected attempt {att.attempt}"
            )
        if env.context != att.context:
            raise WrongContextError(
                f"{where}: message was sealed for another ring order or other weights"
            )
        if env.sender != sender:
            raise WrongSenderError(
                f"{where}: message comes from client {env.sender!r}, expected client {sender} "
                "(its predecessor on the ring)"
            )
        expected_receiver = self.index if receiver is None else receiver
        if env.receiver != expected_receiver or env.hop != hop or env.kind != kind:
            raise UnexpectedMessageError(
                f"{where}: got a {env.kind} message for {env.receiver!r} at hop {env.hop}; "
                f"expected a {kind} message for {expected_receiver!r} at hop {hop}"
            )
        if self.pair is not None and kind == "partial":  # a running sum from it: not dropped
            self.pair.heard_from.add(sender)
        return env

    # ------------------------------------------------------------------ setup
    def announce_range(self, att: Attempt, names: Sequence[str]) -> Message:
        """``clip="auto"``: the power of two above each leaf's largest magnitude (public)."""
        body = leaf_exponents(self._leaves).astype("<i2").tobytes()
        return self.send(att, -1, RELAY, "range", {"exponents": body})

    def read_range(self, att: Attempt, message: Message, sender: int) -> np.ndarray:
        """Another hospital's range announcement: ``[L]`` int16 exponents."""
        env = self.open(att, message, kind="range", hop=-1, sender=sender, receiver=RELAY)
        data = unpack_sections(env.body, where=self._where(att, -1))["exponents"]
        return np.frombuffer(bytes(data), "<i2").astype(np.int16)

    def announce_keys(self, att: Attempt) -> Message:
        """Pairwise masks: publishes this session's two X25519 public keys."""
        return self.send(att, -1, RELAY, "keys", {"keys": self.pair.public.to_bytes()})

    def read_keys(self, att: Attempt, message: Message, sender: int) -> None:
        env = self.open(att, message, kind="keys", hop=-1, sender=sender, receiver=RELAY)
        where = self._where(att, -1)
        data = bytes(unpack_sections(env.body, where=where)["keys"])
        self.pair.learn_peer(sender, PairPublic.from_bytes(data, where=where))

    def send_share(self, att: Attempt, receiver: int, share: bytes) -> Message:
        return self.send(
            att, -1, receiver, "share", {"share": self.pair.seal_for(receiver, share, b"share")}
        )

    def read_share(self, att: Attempt, message: Message, sender: int) -> None:
        env = self.open(att, message, kind="share", hop=-1, sender=sender)
        where = self._where(att, -1)
        data = unpack_sections(env.body, where=where)["share"]
        self.pair.keep_share(sender, self.pair.open_from(sender, data, b"share", where=where))

    def send_reveal(self, att: Attempt, dropped: int) -> Message:
        """A survivor's share of a dropped hospital's mask key, for the initiator only."""
        share = self.pair.reveal_share(dropped, where=self._where(att, att.n))
        plain = struct.pack("<i", dropped) + share
        ct = self.pair.seal_for(att.order[0], plain, b"reveal")
        return self.send(att, att.n, att.order[0], "reveal", {"reveal": ct})

    def read_reveal(self, att: Attempt, message: Message, sender: int) -> tuple[int, bytes]:
        env = self.open(att, message, kind="reveal", hop=att.n, sender=sender)
        where = self._where(att, att.n)
        data = unpack_sections(env.body, where=where)["reveal"]
        plain = self.pair.open_from(sender, data, b"reveal", where=where)
        return struct.unpack("<i", plain[:4])[0], plain[4:]

    # ------------------------------------------------------------------ the ring
    def _contribution(self, att: Attempt, position: int, channel: Channel) -> np.ndarray:
        """Quantised, pairwise-masked and padded centered int64 vector of one channel."""
        spec = att.specs[channel.name]
        ranges = att.ranges[channel.name]
        with self._timer.phase("quantize"):
            values = channel.layout.gather(self._leaves)
            over = np.abs(values) - ranges
            n_over = int(np.count_nonzero(over > 0))
            if n_over:
                self.clipped += n_over
                self.excess = max(self.excess, float(np.max(over)))
            rng = self._rng(att, channel) if spec.stochastic else None
            q, _ = quantize(values / ranges, fraction=att.fractions[self.index], spec=spec, rng=rng)
        if channel.pairwise:
            with self._timer.phase("pairwise"):
                mask = self.pair.mask_for(
                    att.order,
                    modulus=spec.modulus,
                    size=q.size,
                    attempt=att.attempt,
                    channel=channel.name,
                )
                q = centered(q + mask, spec.modulus)
        if channel.pads:
            with self._timer.phase("mask"):
                pad = masking.relay_pad(
                    self._keys.pad_key,
                    modulus=spec.modulus,
                    size=q.size,
                    session=att.session,
                    round_index=att.round_index,
                    attempt=att.attempt,
                    position=position,
                )
                q = centered(q + pad, spec.modulus)
        return q

    def _emit(self, att: Attempt, hop: int, receiver: int, sections: dict[str, bytes]) -> Message:
        self._last_sent = (hop, pack_sections(sections))
        return self.send(att, hop, receiver, "partial", sections)

    def start(self, att: Attempt, source: masking.ByteSource, receiver: int) -> Message:
        """Initiator: draws the mask, encrypts ``R + q`` per channel, sends message 0."""
        sections = {}
        for ch in self._channels:
            secret = self._keys.secret_for(ch.name)
            q = self._contribution(att, 0, ch)
            with self._timer.phase("mask"):
                mask = masking.uniform_mod(ch.backend.modulus, q.size, source=source)
                self._mask[ch.name] = mask
                first = centered(mask + q, ch.backend.modulus)
            with self._timer.phase("encrypt"):
                contribution = ch.backend.encrypt(secret, first, first=True)
            with self._timer.phase("add"):
                running = ch.backend.add(secret, None, contribution)
            with self._timer.phase("serialize"):
                sections[ch.name] = ch.backend.serialize(running)
        return self._emit(att, 0, receiver, sections)

    def reseal(self, att: Attempt, receiver: int) -> Message:
        """Re-sends the last running sum to another receiver (its addressee dropped out)."""
        hop, body = self._last_sent
        return self.send(att, hop, receiver, "partial", unpack_sections(body, where="reseal"))

    def receive(self, att: Attempt, message: Message, *, hop: int, sender: int) -> dict[str, Any]:
        """Checks an incoming partial sum (see :meth:`open`) and deserializes it.

        Raises:
          MalformedCiphertextError: a ciphertext does not deserialize or has the wrong size;
            and every error of :meth:`open`.
        """
        where = self._where(att, hop)
        env = self.open(att, message, kind="partial", hop=hop, sender=sender)
        sections = unpack_sections(env.body, where=where)
        expected = [ch.name for ch in self._channels]
        if sorted(sections) != sorted(expected):
            raise MalformedCiphertextError(
                f"{where}: message carries channels {sorted(sections)}, expected {expected}"
            )
        out = {}
        for ch in self._channels:
            with self._timer.phase("deserialize"):
                running = ch.backend.deserialize(
                    self._keys.secret_for(ch.name),
                    sections[ch.name],
                    where=f"{where}, channel {ch.name}",
                )
            if ch.backend.length(running) != ch.layout.length:
                raise MalformedCiphertextError(
                    f"{where}, channel {ch.name}: {ch.backend.length(running)} values, "
                    f"expected {ch.layout.length}"
                )
            out[ch.name] = running
        return out

    def forward(
        self,
        att: Attempt,
        position: int,
        message: Message,
        *,
        sender: int,
        sender_hop: int,
        receiver: int,
    ) -> Message:
        """Position k >= 1: checks the incoming sum, adds its own contribution, sends it on."""
        incoming = self.receive(att, message, hop=sender_hop, sender=sender)
        sections = {}
        for ch in self._channels:
            secret = self._keys.secret_for(ch.name)
            q = self._contribution(att, position, ch)
            with self._timer.phase("encrypt"):
                contribution = ch.backend.encrypt(secret, q, first=False)
            with self._timer.phase("add"):
                running = ch.backend.add(secret, incoming[ch.name], contribution)
            with self._timer.phase("serialize"):
                sections[ch.name] = ch.backend.serialize(running)
        return self._emit(att, position, receiver, sections)

    def finish(
        self,
        att: Attempt,
        message: Message,
        *,
        sender: int,
        sender_hop: int,
        positions: Sequence[int],
        revealed: dict[int, dict[int, bytes]],
    ) -> dict[str, np.ndarray]:
        """Initiator: checks the closing sum, decrypts, removes R, pads and dropouts' masks.

        Args:
          att: the attempt.
          message: the closing message, from ``sender`` at hop ``sender_hop``.
          positions: ring positions that contributed (their pads are removed).
          revealed: per dropped hospital, ``{holder: share}`` of its mask key (>= t).

        Returns:
          per channel, the ``[length]`` float64 weighted mean over the contributors.
        """
        incoming = self.receive(att, message, hop=sender_hop, sender=sender)
        contributors = [att.order[p] for p in positions]
        share = sum(att.fractions[c] for c in contributors)
        keys = {d: rebuild_private(s) for d, s in revealed.items()}
        out = {}
        for ch in self._channels:
            spec = att.specs[ch.name]
            m = np.int64(spec.modulus)
            with self._timer.phase("decrypt"):
                total = ch.backend.decrypt(self._keys.secret_for(ch.name), incoming[ch.name])
            with self._timer.phase("unmask"):
                total = total - self._mask[ch.name]
                if ch.pads:
                    total = total - masking.pad_sum(
                        self._keys.pad_key,
                        modulus=spec.modulus,
                        size=total.size,
                        session=att.session,
                        round_index=att.round_index,
                        attempt=att.attempt,
                        positions=positions,
                    )
            if ch.pairwise:
                with self._timer.phase("pairwise"):
                    for d, private in keys.items():
                        total = np.mod(total, m) - dropped_masks(
                            private,
                            d,
                            contributors,
                            {**self.pair.peers, self.index: self.pair.public},
                            session=att.session,
                            modulus=spec.modulus,
                            size=total.size,
                            attempt=att.attempt,
                            channel=ch.name,
                        )
            ints = centered(total, spec.modulus)
            out[ch.name] = ints / (spec.scale * share) * att.ranges[ch.name]
        return out

    def publish(self, att: Attempt, result: bytes) -> Message:
        """Initiator: sends the aggregate (each leaf in its dtype, flat order) to the relay."""
        return self.send(att, att.n, RELAY, "result", {"aggregate": result})
