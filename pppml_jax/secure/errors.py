"""Exceptions and warnings of secure aggregation: one base class, one subclass per failure.

Every failure of :func:`pppml_jax.secure.cyclic_aggregate` raises a subclass of
:class:`SecureAggregationError` and leaves its inputs and any cached key material unchanged, so
a caller (the federation engine) can catch the base class and keep its state as it was. Errors
about bad arguments also derive from :class:`ValueError`.
"""

from __future__ import annotations


class SecureAggregationError(Exception):
    """Base class of every error raised by ``pppml_jax.secure``."""


# ---------------------------------------------------------------- bad input (also ValueError)
class InvalidOptionError(SecureAggregationError, ValueError):
    """An option (backend, clip, bits, preset, initiator policy, fault...) is not valid."""


class InvalidUpdateError(SecureAggregationError, ValueError):
    """An update or weight is unusable: wrong structure, shape, dtype, NaN or infinity."""


class StructureMismatchError(InvalidUpdateError):
    """Client updates do not share one pytree structure, or a leaf shape differs."""


class NonFiniteUpdateError(InvalidUpdateError):
    """An update holds NaN or an infinity."""


class RingTooSmallError(SecureAggregationError, ValueError):
    """Fewer than three parties (or two without ``allow_two_party=True``)."""


# ---------------------------------------------------------------- protocol failures
class ProtocolError(SecureAggregationError):
    """A message on the ring was not what the receiving party expected."""


class TamperedMessageError(ProtocolError):
    """A message failed authentication or was truncated: it was altered on the wire."""


class MalformedCiphertextError(ProtocolError):
    """A ciphertext could not be deserialized, or has the wrong number of chunks."""


class UnexpectedMessageError(ProtocolError):
    """An authentic message arrived at the wrong hop, attempt or receiver."""


class WrongSenderError(UnexpectedMessageError):
    """An authentic message came from a party other than the expected predecessor."""


class ReplayedMessageError(UnexpectedMessageError):
    """An authentic message belongs to another aggregation call (another session id): a replay."""


class WrongRoundError(ReplayedMessageError):
    """An authentic message belongs to another round (a replay)."""


class WrongContextError(UnexpectedMessageError):
    """An authentic message of this session was sealed for another ring order or weights."""


class ReusedRoundError(SecureAggregationError, ValueError):
    """A round index (or session id) already completed under the same key set was used again."""


class ClientDropoutError(SecureAggregationError):
    """A client went offline mid-ring and the round was aborted (``on_dropout="abort"``)."""


# ---------------------------------------------------------------- backend failures
class BackendUnavailableError(SecureAggregationError, ImportError):
    """The library behind a backend (tenseal, concrete-python) cannot be imported."""


class BackendError(SecureAggregationError):
    """An unexpected failure inside an encryption library (the original is ``__cause__``)."""


class DecryptionError(SecureAggregationError):
    """Decryption cannot be trusted: noise budget exhausted or CKKS error too large."""


# ---------------------------------------------------------------- warnings
class TwoPartyRingWarning(UserWarning):
    """A ring of two was allowed: each party can recover the other's update."""


class ClippingWarning(UserWarning):
    """Update values beyond an explicit ``clip`` range were clipped: the aggregate changed.

    The message says how many coordinates and by how much; ``res.stats.clipped``,
    ``clip_excess`` and ``clipping_bound`` hold the numbers, and ``error_bound`` includes
    ``clipping_bound``.
    """
