"""The parties of the ring: hospitals (each with its own update) and the forwarding relay."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pppml_jax.secure import faults as faults_lib
from pppml_jax.secure import masking
from pppml_jax.secure.backends.base import Backend
from pppml_jax.secure.errors import (
    MalformedCiphertextError,
    UnexpectedMessageError,
    WrongRoundError,
    WrongSenderError,
)
from pppml_jax.secure.keys import HospitalKeys, RelayKeys
from pppml_jax.secure.messages import (
    RELAY,
    Message,
    open_sealed,
    pack_sections,
    seal,
    unpack_sections,
)
from pppml_jax.secure.quantize import QuantSpec, centered, dequantize, quantize
from pppml_jax.secure.tree import Layout


class PhaseTimer:
    """Accumulates wall-clock seconds per named phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Channel:
    """One part of the update and how it travels.

    Attributes:
      name: ``"encrypted"`` (through the encryption backend) or ``"masked"`` (masked only).
      backend: the backend that carries it.
      layout: which leaves, where in the channel vector.
      pads: whether relay pads are added (masked-only channels).
    """

    name: str
    backend: Backend
    layout: Layout
    pads: bool


@dataclass(frozen=True)
class Attempt:
    """Public facts of one attempt, known to every party."""

    round_index: int
    attempt: int
    order: tuple[int, ...]
    fractions: dict[int, float]
    specs: dict[str, QuantSpec]

    @property
    def n(self) -> int:
        return len(self.order)


class Offline(Exception):
    """Internal signal: the relay found ``client`` offline at ``hop``."""

    def __init__(self, client: int, hop: int) -> None:
        super().__init__(client, hop)
        self.client, self.hop = client, hop


class Hospital:
    """A hospital: holds its own update and the hospitals' shared secret keys, nothing else.

    Args:
      index: client index (position in the caller's ``updates`` list).
      leaves: its own flat update leaves (float64).
      keys: the hospitals' :class:`HospitalKeys`.
      channels: the channels of this round.
      timer: phase timer shared by the simulation (bookkeeping only).
      stochastic_seed: seed of its stochastic rounding (``None``: OS entropy).
    """

    def __init__(
        self,
        index: int,
        leaves: Sequence[np.ndarray],
        keys: HospitalKeys,
        channels: Sequence[Channel],
        timer: PhaseTimer,
        stochastic_seed: Sequence[int] | None,
    ) -> None:
        self.index = index
        self._leaves = leaves
        self._keys = keys
        self._channels = channels
        self._timer = timer
        self._stochastic_seed = stochastic_seed
        self._mask: dict[str, np.ndarray] = {}
        self.clipped = 0

    def _where(self, att: Attempt, hop: int) -> str:
        return f"round {att.round_index}, attempt {att.attempt}: client {self.index} at hop {hop}"

    def _rng(self, att: Attempt, channel: Channel) -> np.random.Generator:
        """Stochastic rounding's generator: one stream per attempt, client and channel."""
        if self._stochastic_seed is None:
            return np.random.default_rng(secrets.randbits(128))
        stream = 0 if channel.name == "encrypted" else 1
        return np.random.default_rng([*self._stochastic_seed, att.attempt, self.index, stream])

    def _contribution(self, att: Attempt, position: int, channel: Channel) -> np.ndarray:
        """Quantised (and, for masked channels, padded) centered int64 vector."""
        spec = att.specs[channel.name]
        with self._timer.phase("quantize"):
            values = channel.layout.gather(self._leaves)
            rng = self._rng(att, channel) if spec.stochastic else None
            q, clipped = quantize(values, fraction=att.fractions[self.index], spec=spec, rng=rng)
            self.clipped += clipped
            if channel.pads:
                pad = masking.relay_pad(
                    self._keys.pad_key,
                    modulus=spec.modulus,
                    size=q.size,
                    round_index=att.round_index,
                    attempt=att.attempt,
                    position=position,
                )
                q = centered(q + pad, spec.modulus)
        return q

    def _send(self, att: Attempt, hop: int, receiver: int | str, kind: str, sections) -> Message:
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
            )

    def start(self, att: Attempt, source: masking.ByteSource) -> Message:
        """Initiator: draws the mask, encrypts ``R + q`` per channel, sends message 0."""
        sections = {}
        for ch in self._channels:
            secret = self._keys.secret_for(ch.name)
            q = self._contribution(att, 0, ch)
            with self._timer.phase("mask"):
                mask = masking.uniform_mod(ch.backend.modulus, q.size, source=source)
                self._mask[ch.name] = mask
                first = centered(q + mask, ch.backend.modulus)
            with self._timer.phase("encrypt"):
                contribution = ch.backend.encrypt(secret, first, first=True)
            with self._timer.phase("add"):
                running = ch.backend.add(secret, None, contribution)
            with self._timer.phase("serialize"):
                sections[ch.name] = ch.backend.serialize(running)
        return self._send(att, 0, att.order[1], "partial", sections)

    def receive(self, att: Attempt, message: Message, *, hop: int, sender: int) -> dict[str, Any]:
        """Checks an incoming partial sum and deserializes it.

        Raises:
          TamperedMessageError: failed authentication or truncated.
          WrongSenderError / WrongRoundError / UnexpectedMessageError: authentic but not the
            message this party expects now.
          MalformedCiphertextError: a ciphertext does not deserialize or has the wrong size.
        """
        where = self._where(att, hop)
        with self._timer.phase("authenticate"):
            env = open_sealed(self._keys.mac_key, message.payload, where=where)
        if env.sender != sender:
            raise WrongSenderError(
                f"{where}: message comes from client {env.sender!r}, expected client {sender} "
                "(its predecessor on the ring)"
            )
        if env.round_index != att.round_index:
            raise WrongRoundError(
                f"{where}: message belongs to round {env.round_index}, not {att.round_index} "
                "(replayed)"
            )
        if env.receiver != self.index:
            raise UnexpectedMessageError(
                f"{where}: message is addressed to {env.receiver!r}, not to this client"
            )
        if env.attempt != att.attempt or env.hop != hop or env.kind != "partial":
            raise UnexpectedMessageError(
                f"{where}: got {env.kind} message of attempt {env.attempt}, hop {env.hop}; "
                f"expected a partial sum of attempt {att.attempt}, hop {hop}"
            )
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

    def forward(self, att: Attempt, position: int, message: Message) -> Message:
        """Position k >= 1: checks message k-1, adds its own contribution, sends message k."""
        incoming = self.receive(att, message, hop=position - 1, sender=att.order[position - 1])
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
        receiver = att.order[(position + 1) % att.n]
        return self._send(att, position, receiver, "partial", sections)

    def finish(self, att: Attempt, message: Message) -> dict[str, np.ndarray]:
        """Initiator: checks message n-1, decrypts, removes R and the pads, dequantises.

        Returns:
          per channel, the ``[length]`` float64 weighted mean (padding included).
        """
        incoming = self.receive(att, message, hop=att.n - 1, sender=att.order[-1])
        out = {}
        for ch in self._channels:
            spec = att.specs[ch.name]
            with self._timer.phase("decrypt"):
                total = ch.backend.decrypt(self._keys.secret_for(ch.name), incoming[ch.name])
            with self._timer.phase("unmask"):
                total = total - self._mask[ch.name]
                if ch.pads:
                    total = total - masking.pad_sum(
                        self._keys.pad_key,
                        modulus=spec.modulus,
                        size=total.size,
                        round_index=att.round_index,
                        attempt=att.attempt,
                        positions=att.n,
                    )
                out[ch.name] = dequantize(centered(total, spec.modulus), spec)
        return out

    def publish(self, att: Attempt, flat_result: np.ndarray) -> Message:
        """Initiator: sends the aggregate (float32 values, flat leaf order) to the relay."""
        return self._send(
            att, att.n, RELAY, "result", {"aggregate": flat_result.astype("<f4").tobytes()}
        )


class Relay:
    """The relay server: forwards every message and records it; holds only public material.

    Simulated faults (tampering, injected messages, offline clients) are applied here, as a
    malicious relay or a broken network would.
    """

    def __init__(self, keys: RelayKeys, faults: Sequence[faults_lib.Fault]) -> None:
        self.keys = keys
        self._faults = faults
        self.transcript: list[Message] = []
        self.triggered: list[faults_lib.Fault] = []

    def check_online(self, client: int, *, attempt: int, hop: int) -> None:
        """Raises ``Offline`` if ``client`` is offline when message ``hop`` is due."""
        if faults_lib.is_offline(self._faults, client, attempt=attempt, hop=hop):
            raise Offline(client, hop)

    def forward(self, message: Message, *, receiver: int | str) -> Message:
        """Delivers ``message`` (altered if a fault says so) and records what was delivered."""
        delivered = message
        for f in self._faults:
            if f.attempt != message.attempt or getattr(f, "hop", None) != message.hop:
                continue
            if isinstance(f, faults_lib.Tamper) and message.kind == "partial":
                payload = bytearray(message.payload)
                if f.mode == "truncate":
                    payload = payload[: len(payload) // 2]
                else:
                    pos = len(payload) // 2 if f.offset is None else f.offset % len(payload)
                    payload[pos] ^= 0x01
                delivered = Message(
                    message.sender,
                    message.receiver,
                    message.kind,
                    message.round_index,
                    message.attempt,
                    message.hop,
                    bytes(payload),
                )
                self.triggered.append(f)
            elif isinstance(f, faults_lib.Inject) and message.kind == "partial":
                delivered = f.message
                self.triggered.append(f)
        if receiver != RELAY:
            self.check_online(receiver, attempt=message.attempt, hop=message.hop)
        self.transcript.append(delivered)
        return delivered
