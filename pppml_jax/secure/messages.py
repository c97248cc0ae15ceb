"""Messages on the ring and their wire format: an authenticated envelope around byte sections.

Every payload is ``header | body | tag``:

- header (88 bytes, little-endian): magic ``b"PSA2"``, kind (1 = partial sum, 2 = result,
  3 = pairwise public keys, 4 = an encrypted Shamir share, 5 = a revealed share, 6 = a clip
  range announcement), three reserved bytes, round index (int64), attempt, hop, sender,
  receiver (int32 each; the relay is -1), body length (uint64), the call's 16-byte random
  session id, and a 32-byte context digest (SHA-256 of the session, round, attempt, ring
  order and weights: :func:`context_digest`);
- body: named sections (``u8`` count, then per section ``u8`` name length, name, ``u64``
  length, bytes): the ciphertexts of the encrypted channel, the residues of the masked one;
- tag: HMAC-SHA256 of header and body under the hospitals' shared MAC key.

The relay has no MAC key, so it can neither alter a payload nor forge a header unnoticed;
the receiver checks the tag first, then that the authenticated round, session, context,
sender, receiver, attempt and hop are the ones it expects: a message from another call
(session), another ring order or weights (context) or another position (hop) is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pppml_jax.secure.errors import MalformedCiphertextError, TamperedMessageError

RELAY = "relay"
"""Name of the relay server in :class:`Message` ``sender`` / ``receiver`` fields."""

KINDS = {"partial": 1, "result": 2, "keys": 3, "share": 4, "reveal": 5, "range": 6}
_KIND_NAMES = {v: k for k, v in KINDS.items()}
_HEADER = struct.Struct("<4sB3xqiiiiQ16s32s")
_MAGIC = b"PSA2"
SESSION_BYTES = 16
HEADER_BYTES = _HEADER.size
TAG_BYTES = 32


@dataclass(frozen=True)
class Message:
    """One message as it crossed the wire (every message passes through the relay).

    Attributes:
      sender: client index of the sending hospital, or ``RELAY``.
      receiver: client index of the receiving hospital, or ``RELAY``.
      kind: ``"partial"`` (running masked sum between hospitals) or ``"result"`` (the
        aggregate the initiator publishes).
      round_index: the federation round.
      attempt: 0, or k after k re-formations of the ring (dropouts).
      hop: position of the message in its attempt (0 = sent by the initiator).
      payload: exactly the bytes on the wire (authenticated envelope).
      session: the call's 16-byte session id (also inside the payload's header).
    """

    sender: int | str
    receiver: int | str
    kind: str
    round_index: int
    attempt: int
    hop: int
    payload: bytes
    session: bytes = b""


def context_digest(
    session: bytes, round_index: int, attempt: int, order: Sequence[int], weights: Sequence[float]
) -> bytes:
    """SHA-256 of the public facts one attempt's messages are bound to.

    Args:
      session: the call's session id.
      round_index, attempt: where in the federation.
      order: the attempt's ring order (client indices, initiator first).
      weights: the ``[n]`` public weight fractions of the call's clients (float64).

    Returns:
      32 bytes; a message carries it in its authenticated header, and a receiver refuses one
      whose digest differs from its own (``WrongContextError``).
    """
    h = hashlib.sha256(b"pppml-secure-context")
    h.update(session)
    h.update(struct.pack("<qqq", round_index, attempt, len(order)))
    h.update(np.asarray(order, "<i8").tobytes())
    h.update(np.asarray(weights, "<f8").tobytes())
    return h.digest()


def _party_code(party: int | str) -> int:
    return -1 if party == RELAY else int(party)


def _party_name(code: int) -> int | str:
    return RELAY if code == -1 else code


def seal(
    key: bytes,
    *,
    sender: int | str,
    receiver: int | str,
    kind: str,
    round_index: int,
    attempt: int,
    hop: int,
    body: bytes,
    session: bytes,
    context: bytes = bytes(32),
) -> Message:
    """Builds an authenticated :class:`Message` around ``body`` (see the module doc)."""
    if len(session) != SESSION_BYTES or len(context) != 32:
        raise ValueError("session must be 16 bytes and context 32 bytes")
    header = _HEADER.pack(
        _MAGIC,
        KINDS[kind],
        round_index,
        attempt,
        hop,
        _party_code(sender),
        _party_code(receiver),
        len(body),
        session,
        context,
    )
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(body)
    payload = b"".join((header, body, mac.digest()))
    return Message(sender, receiver, kind, round_index, attempt, hop, payload, session)


@dataclass(frozen=True)
class Envelope:
    """The authenticated contents of a payload (see the module doc)."""

    kind: str
    round_index: int
    attempt: int
    hop: int
    sender: int | str
    receiver: int | str
    body: memoryview
    session: bytes = b""
    context: bytes = b""


def open_sealed(key: bytes, payload: bytes, *, where: str) -> Envelope:
    """Checks a payload's length and tag and returns its authenticated contents.

    Args:
      key: the hospitals' shared MAC key.
      payload: the bytes received.
      where: description of the receiving party and step, for error messages.

    Raises:
      TamperedMessageError: the payload is truncated or extended, or its tag does not match.
    """
    if len(payload) < _HEADER.size + TAG_BYTES:
        raise TamperedMessageError(
            f"{where}: payload of {len(payload)} bytes is shorter than an empty envelope "
            f"({_HEADER.size + TAG_BYTES} bytes): truncated on the wire"
        )
    header = payload[: _HEADER.size]
    magic, kind, rnd, attempt, hop, sender, receiver, length, session, context = _HEADER.unpack(
        header
    )
    expected = _HEADER.size + length + TAG_BYTES
    if magic != _MAGIC or len(payload) != expected:
        raise TamperedMessageError(
            f"{where}: payload has {len(payload)} bytes but its header announces {expected}: "
            "truncated or altered on the wire"
        )
    view = memoryview(payload)
    body = view[_HEADER.size : _HEADER.size + length]
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(body)
    if not hmac.compare_digest(bytes(view[_HEADER.size + length :]), mac.digest()):
        raise TamperedMessageError(
            f"{where}: authentication tag does not match: the message was altered on the wire "
            "(or sealed under another key set)"
        )
    if kind not in _KIND_NAMES:
        raise TamperedMessageError(f"{where}: unknown message kind {kind}")
    return Envelope(
        _KIND_NAMES[kind],
        rnd,
        attempt,
        hop,
        _party_name(sender),
        _party_name(receiver),
        body,
        session,
        context,
    )


def pack_sections(sections: dict[str, bytes]) -> bytes:
    """Concatenates named byte sections (see the module doc)."""
    parts = [struct.pack("<B", len(sections))]
    for name, data in sections.items():
        raw = name.encode()
        parts += [struct.pack("<B", len(raw)), raw, struct.pack("<Q", len(data)), data]
    return b"".join(parts)


def unpack_sections(body: bytes | memoryview, *, where: str) -> dict[str, memoryview]:
    """Inverse of :func:`pack_sections` (sections are views into ``body``, not copies).

    Raises:
      MalformedCiphertextError: the body is not a well-formed list of sections.
    """
    view = memoryview(body)
    out: dict[str, memoryview] = {}
    try:
        (count,) = struct.unpack_from("<B", view, 0)
        pos = 1
        for _ in range(count):
            (nlen,) = struct.unpack_from("<B", view, pos)
            name = bytes(view[pos + 1 : pos + 1 + nlen]).decode()
            pos += 1 + nlen
            (dlen,) = struct.unpack_from("<Q", view, pos)
            pos += 8
            if pos + dlen > len(view):
                raise struct.error("section runs past the end")
            out[name] = view[pos : pos + dlen]
            pos += dlen
    except (struct.error, UnicodeDecodeError) as err:
        raise MalformedCiphertextError(f"{where}: malformed message body ({err})") from err
    if pos != len(view):
        raise MalformedCiphertextError(f"{where}: {len(view) - pos} stray bytes after sections")
    return out


def pack_chunks(chunks: list[bytes]) -> bytes:
    """Frames a list of serialized ciphertext chunks (``u32`` count, ``u64`` lengths)."""
    parts = [struct.pack("<I", len(chunks))]
    for c in chunks:
        parts += [struct.pack("<Q", len(c)), c]
    return b"".join(parts)


def unpack_chunks(data: bytes | memoryview, *, where: str) -> list[bytes]:
    """Inverse of :func:`pack_chunks`.

    Raises:
      MalformedCiphertextError: the framing is inconsistent.
    """
    view = memoryview(data)
    try:
        (count,) = struct.unpack_from("<I", view, 0)
        pos, out = 4, []
        for _ in range(count):
            (n,) = struct.unpack_from("<Q", view, pos)
            pos += 8
            if pos + n > len(view):
                raise struct.error("chunk runs past the end")
            out.append(bytes(view[pos : pos + n]))
            pos += n
    except struct.error as err:
        raise MalformedCiphertextError(f"{where}: malformed ciphertext framing ({err})") from err
    if pos != len(view):
        raise MalformedCiphertextError(f"{where}: {len(view) - pos} stray bytes after chunks")
    return out
