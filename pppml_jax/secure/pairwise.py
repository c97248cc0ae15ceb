"""Pairwise masks inside the ring (SecAgg-style): X25519 agreement, an AES-CTR PRG, Shamir shares.

Beyond the paper. Every aggregation call (session), each hospital i makes two fresh X25519 key
pairs: a *mask* key and a *channel* key, and publishes both public keys (through the relay,
authenticated). For every other hospital j it then

- derives a pair seed ``HKDF-SHA256(X25519(mask_sk_i, mask_pk_j), salt=session,
  info="pppml-pair-mask" | min(i,j) | max(i,j))`` (32 bytes; j derives the same one);
- expands it, per attempt and channel, with AES-256-CTR into a vector uniform modulo the
  channel's modulus M (rejection sampling, no bias): the pair mask ``m_ij = m_ji``;
- splits its mask private key into Shamir shares (t-of-n over the prime field ``2**521 - 1``)
  and sends share j to hospital j, encrypted with AES-256-GCM under a key derived from the
  channel keys (so the relay, which forwards them, learns nothing).

Before entering the ring, hospital i adds ``sum_{j > i} m_ij - sum_{j < i} m_ij`` to its
quantised update; over every member of the ring the masks cancel. A coalition of the relay and
fewer than t hospitals (all holding the shared ring keys, so able to decrypt every running sum)
sees each honest hospital's update hidden by its masks with the other honest hospitals.

When a hospital d drops before adding its contribution, the ring skips it; at the close, at
least t survivors reveal (to the initiator, encrypted) their shares of d's mask key, the
initiator rebuilds it and removes the masks that the contributors share with d. A survivor
refuses to reveal a share for a hospital it has received a message from in this session (d
cannot be both dropped and heard from).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pppml_jax.secure.errors import ProtocolError, TamperedMessageError
from pppml_jax.secure.masking import ByteSource, uniform_mod

PRIME = 2**521 - 1
"""The Shamir field: a Mersenne prime above every 256-bit X25519 private key."""

SHARE_BYTES = 66
"""Bytes of one share value (a field element, little-endian)."""

CHANNEL_CODES = {"encrypted": 1, "masked": 2}


def default_threshold(n: int) -> int:
    """t = floor(n/2) + 1 (a majority), at least 2: survivors needed to remove a dropout."""
    return max(2, n // 2 + 1)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def _hkdf(shared: bytes, session: bytes, label: bytes, i: int, j: int) -> bytes:
    info = label + struct.pack("<ii", min(i, j), max(i, j))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session, info=info).derive(shared)


def pair_seed(private: X25519PrivateKey, me: int, other: int, other_public: bytes, session: bytes):
    """The 32-byte seed ``me`` and ``other`` share (symmetric in the two parties)."""
    shared = private.exchange(X25519PublicKey.from_public_bytes(other_public))
    return _hkdf(shared, session, b"pppml-pair-mask", me, other)


def prg_source(seed: bytes, *, attempt: int, channel: str) -> ByteSource:
    """AES-256-CTR keystream under ``seed``, one stream per (attempt, channel).

    Returns:
      ``source(k) -> k`` bytes, consecutive parts of the keystream (deterministic given the
      seed: both holders of a pair seed draw the same mask).
    """
    nonce = struct.pack("<qq", attempt, CHANNEL_CODES[channel])
    enc = Cipher(algorithms.AES(seed), modes.CTR(nonce)).encryptor()
    return lambda k: enc.update(bytes(k))


def pair_mask(seed: bytes, *, modulus: int, size: int, attempt: int, channel: str) -> np.ndarray:
    """The ``[size]`` int64 pair mask, uniform on ``[0, modulus)``."""
    return uniform_mod(modulus, size, source=prg_source(seed, attempt=attempt, channel=channel))


def signed_mask_sum(
    seeds: dict[int, bytes],
    me: int,
    *,
    modulus: int,
    size: int,
    attempt: int,
    channel: str,
) -> np.ndarray:
    """``sum_{j > me} m_ij - sum_{j < me} m_ij mod M`` over the partners in ``seeds``.

    Args:
      seeds: partner index -> pair seed.
      me: this hospital's index (the sign convention).
      modulus, size: the channel's modulus M and vector length.
      attempt, channel: the PRG stream.

    Returns:
      ``[size]`` int64 residues in ``[0, M)``.
    """
    total = np.zeros(size, np.int64)
    m = np.int64(modulus)
    for other in sorted(seeds):
        mask = pair_mask(seeds[other], modulus=modulus, size=size, attempt=attempt, channel=channel)
        total = total + mask if other > me else total - mask
        total = np.mod(total, m)
    return total


# ------------------------------------------------------------------------------------ Shamir
def shamir_split(secret: int, xs: Sequence[int], threshold: int) -> dict[int, int]:
    """Splits ``secret`` into shares ``{x: f(x)}`` of a random degree ``t-1`` polynomial.

    Args:
      secret: an integer in ``[0, PRIME)``.
      xs: distinct non-zero evaluation points (here client index + 1).
      threshold: t; any t shares rebuild the secret, fewer reveal nothing about it.
    """
    if not 0 <= secret < PRIME:
        raise ValueError("secret out of the field")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} must be in [1, {len(xs)}]")
    coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        acc = 0
        for c in reversed(coeffs):
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


def shamir_combine(shares: dict[int, int]) -> int:
    """Lagrange interpolation at 0 of ``{x: y}`` (needs at least t shares)."""
    total = 0
    for xi, yi in shares.items():
        num, den = 1, 1
        for xj in shares:
            if xj != xi:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


# ------------------------------------------------------------------------------------ parties
@dataclass(frozen=True)
class PairPublic:
    """A hospital's published keys of one session: ``mask`` and ``channel`` (32 bytes each)."""

    mask: bytes
    channel: bytes

    def to_bytes(self) -> bytes:
        return self.mask + self.channel

    @staticmethod
    def from_bytes(data: bytes, *, where: str) -> PairPublic:
        if len(data) != 64:
            raise TamperedMessageError(f"{where}: pairwise key message of {len(data)} bytes")
        return PairPublic(bytes(data[:32]), bytes(data[32:]))


class PairParty:
    """One hospital's pairwise material for one session (fresh X25519 keys every call).

    Args:
      index: the hospital's client index.
      session: the call's session id.
    """

    def __init__(self, index: int, session: bytes) -> None:
        self.index = index
        self.session = session
        self._mask_sk = X25519PrivateKey.generate()
        self._chan_sk = X25519PrivateKey.generate()
        self.public = PairPublic(_raw_public(self._mask_sk), _raw_public(self._chan_sk))
        self.peers: dict[int, PairPublic] = {}
        self._seeds: dict[int, bytes] = {}
        self._shares: dict[int, int] = {}  # owner -> this hospital's share of owner's mask key
        self.heard_from: set[int] = set()

    # -- setup
    def learn_peer(self, other: int, public: PairPublic) -> None:
        """Records another hospital's public keys and derives the pair seed."""
        self.peers[other] = public
        self._seeds[other] = pair_seed(self._mask_sk, self.index, other, public.mask, self.session)

    def _aead(self, other: int) -> AESGCM:
        shared = self._chan_sk.exchange(
            X25519PublicKey.from_public_bytes(self.peers[other].channel)
        )
        return AESGCM(_hkdf(shared, self.session, b"pppml-pair-channel", self.index, other))

    def _aad(self, sender: int, receiver: int, kind: bytes) -> bytes:
        return self.session + kind + struct.pack("<ii", sender, receiver)

    def seal_for(self, other: int, plaintext: bytes, kind: bytes) -> bytes:
        """AES-256-GCM under the pair's channel key (nonce prepended)."""
        nonce = secrets.token_bytes(12)
        aad = self._aad(self.index, other, kind)
        return nonce + self._aead(other).encrypt(nonce, plaintext, aad)

    def open_from(self, other: int, data: bytes, kind: bytes, *, where: str) -> bytes:
        """Inverse of :meth:`seal_for` on the receiving side."""
        try:
            aad = self._aad(other, self.index, kind)
            return self._aead(other).decrypt(bytes(data[:12]), bytes(data[12:]), aad)
        except Exception as err:  # InvalidTag, short data
            raise TamperedMessageError(f"{where}: pairwise ciphertext fails to decrypt") from err

    def split_key(self, members: Iterable[int], threshold: int) -> dict[int, bytes]:
        """Shamir shares of the mask key, one per member (its own included), as bytes."""
        secret = int.from_bytes(self._mask_sk.private_bytes_raw(), "little")
        shares = shamir_split(secret, [m + 1 for m in members], threshold)
        return {x - 1: y.to_bytes(SHARE_BYTES, "little") for x, y in shares.items()}

    def keep_share(self, owner: int, share: bytes) -> None:
        """Stores this hospital's share of ``owner``'s mask key."""
        self._shares[owner] = int.from_bytes(share, "little")

    # -- the round
    def mask_for(self, members: Iterable[int], *, modulus: int, size: int, attempt: int, channel):
        """This hospital's signed sum of pair masks with the other ``members``."""
        seeds = {j: self._seeds[j] for j in members if j != self.index}
        return signed_mask_sum(
            seeds, self.index, modulus=modulus, size=size, attempt=attempt, channel=channel
        )

    def reveal_share(self, dropped: int, *, where: str) -> bytes:
        """This hospital's share of a dropped hospital's mask key (refused if heard from)."""
        if dropped in self.heard_from:
            raise ProtocolError(
                f"{where}: client {self.index} received a message from client {dropped} in "
                "this session, so it refuses to reveal that client's key share (it is not a "
                "dropout)"
            )
        return self._shares[dropped].to_bytes(SHARE_BYTES, "little")

    def seed_with(self, other: int) -> bytes:
        """The pair seed with ``other`` (what a colluding hospital knows about that pair)."""
        return self._seeds[other]


def rebuild_private(shares: dict[int, bytes]) -> X25519PrivateKey:
    """A dropped hospital's mask private key from ``{holder index: share bytes}`` (>= t)."""
    points = {holder + 1: int.from_bytes(s, "little") for holder, s in shares.items()}
    secret = shamir_combine(points)
    return X25519PrivateKey.from_private_bytes(secret.to_bytes(32, "little"))


def dropped_masks(
    private: X25519PrivateKey,
    dropped: int,
    contributors: Iterable[int],
    publics: dict[int, PairPublic],
    *,
    session: bytes,
    modulus: int,
    size: int,
    attempt: int,
    channel: str,
) -> np.ndarray:
    """What the contributors added toward ``dropped``: ``sum_j sign_j(d) m_jd mod M``."""
    total = np.zeros(size, np.int64)
    for j in contributors:
        seed = pair_seed(private, dropped, j, publics[j].mask, session)
        part = signed_mask_sum(
            {dropped: seed}, j, modulus=modulus, size=size, attempt=attempt, channel=channel
        )
        total = np.mod(total + part, np.int64(modulus))
    return total
