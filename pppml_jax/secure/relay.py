"""The relay server (forwards and records every message), the offline signal and a phase timer."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence

from pppml_jax.secure import faults as faults_lib
from pppml_jax.secure.keys import RelayKeys
from pppml_jax.secure.messages import RELAY, Message


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


class Offline(Exception):
    """Internal signal: the relay found ``client`` offline at ``hop``."""

    def __init__(self, client: int, hop: int) -> None:
        super().__init__(client, hop)
        self.client, self.hop = client, hop


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

    def is_offline(self, client: int, *, attempt: int, hop: int) -> bool:
        """Whether ``client`` is offline when message ``hop`` of ``attempt`` is due."""
        return faults_lib.is_offline(self._faults, client, attempt=attempt, hop=hop)

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
                delivered = dataclasses.replace(message, payload=bytes(payload))
                self.triggered.append(f)
            elif isinstance(f, faults_lib.Inject) and message.kind == "partial":
                if f.message is not None:
                    delivered = f.message
                else:
                    delivered = next(
                        m
                        for m in self.transcript
                        if m.kind == "partial" and m.attempt == f.attempt and m.hop == f.from_hop
                    )
                self.triggered.append(f)
        if receiver != RELAY:
            self.check_online(receiver, attempt=message.attempt, hop=message.hop)
        self.transcript.append(delivered)
        return delivered
