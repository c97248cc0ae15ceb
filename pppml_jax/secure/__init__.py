"""Cyclic secure aggregation (CSA) under homomorphic encryption, run on the host between rounds.

Entry points: :class:`SecureAggregator` (one per federation run: keys made once, each round
index completes once) and :func:`cyclic_aggregate` (one call, fresh keys). Backends: ``plain``
(masking only), ``bfv`` (exact packed integers), ``ckks`` (TenSEAL CKKS, ``paper`` and
``lean`` presets), ``concrete`` (Zama Concrete, TFHE); TenSEAL and concrete-python are
imported only when their backend is chosen. Pairwise masks (X25519, AES-CTR, Shamir shares)
protect against the relay plus fewer than t hospitals. :mod:`pppml_jax.secure.transcript`
reads a transcript as a given party would (for attack and threat-model code);
:func:`measure` times one configuration. See ``docs/secure_aggregation.md``.
"""

from __future__ import annotations

from pppml_jax.secure import transcript
from pppml_jax.secure.aggregate import SecureAggregator, cyclic_aggregate
from pppml_jax.secure.backends import BackendInfo, available_backends, backend_option_names
from pppml_jax.secure.errors import (
    BackendError,
    BackendUnavailableError,
    ClientDropoutError,
    ClippingWarning,
    DecryptionError,
    InvalidOptionError,
    InvalidUpdateError,
    MalformedCiphertextError,
    NonFiniteUpdateError,
    ProtocolError,
    ReplayedMessageError,
    ReusedRoundError,
    RingTooSmallError,
    SecureAggregationError,
    StructureMismatchError,
    TamperedMessageError,
    TwoPartyRingWarning,
    UnexpectedMessageError,
    WrongContextError,
    WrongRoundError,
    WrongSenderError,
)
from pppml_jax.secure.faults import Dropout, Inject, Tamper
from pppml_jax.secure.initiator import choose_initiator
from pppml_jax.secure.keys import HospitalKeys, KeySet, RelayKeys, generate_keyset
from pppml_jax.secure.measure import MeasureConfig, measure
from pppml_jax.secure.messages import RELAY, Message
from pppml_jax.secure.options import RingOptions
from pppml_jax.secure.results import AggregationResult, AggregationStats
from pppml_jax.secure.tree import key_path_name

__all__ = [
    "RELAY",
    "AggregationResult",
    "AggregationStats",
    "BackendError",
    "BackendInfo",
    "BackendUnavailableError",
    "ClientDropoutError",
    "ClippingWarning",
    "DecryptionError",
    "Dropout",
    "HospitalKeys",
    "Inject",
    "InvalidOptionError",
    "InvalidUpdateError",
    "KeySet",
    "MalformedCiphertextError",
    "MeasureConfig",
    "Message",
    "NonFiniteUpdateError",
    "ProtocolError",
    "RelayKeys",
    "ReplayedMessageError",
    "ReusedRoundError",
    "RingOptions",
    "RingTooSmallError",
    "SecureAggregationError",
    "SecureAggregator",
    "StructureMismatchError",
    "Tamper",
    "TamperedMessageError",
    "TwoPartyRingWarning",
    "UnexpectedMessageError",
    "WrongContextError",
    "WrongRoundError",
    "WrongSenderError",
    "available_backends",
    "backend_option_names",
    "choose_initiator",
    "cyclic_aggregate",
    "generate_keyset",
    "key_path_name",
    "measure",
    "transcript",
]
