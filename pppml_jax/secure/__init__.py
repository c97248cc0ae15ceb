"""Cyclic secure aggregation (CSA) under homomorphic encryption, run on the host between rounds.

Entry point: :func:`cyclic_aggregate` (or a :class:`SecureAggregator` that keeps its keys across
rounds). Backends: ``plain`` (masking only), ``bfv`` (exact packed integers), ``ckks``
(TenSEAL CKKS, ``paper`` and ``lean`` presets), ``concrete`` (Zama Concrete, TFHE). TenSEAL
and concrete-python are imported only when their backend is chosen. See
``docs/secure_aggregation.md`` for the threat model and protocol.
"""

from __future__ import annotations

from pppml_jax.secure.aggregate import (
    SecureAggregator,
    clear_aggregator_cache,
    cyclic_aggregate,
    get_aggregator,
)
from pppml_jax.secure.backends import (
    Backend,
    BackendInfo,
    available_backends,
    backend_option_names,
    make_backend,
)
from pppml_jax.secure.errors import (
    BackendError,
    BackendUnavailableError,
    ClientDropoutError,
    DecryptionError,
    InvalidOptionError,
    InvalidUpdateError,
    MalformedCiphertextError,
    NonFiniteUpdateError,
    ProtocolError,
    RingTooSmallError,
    SecureAggregationError,
    StructureMismatchError,
    TamperedMessageError,
    TwoPartyRingWarning,
    UnexpectedMessageError,
    WrongRoundError,
    WrongSenderError,
)
from pppml_jax.secure.faults import Dropout, Inject, Tamper
from pppml_jax.secure.initiator import choose_initiator
from pppml_jax.secure.keys import HospitalKeys, KeySet, RelayKeys, generate_keyset
from pppml_jax.secure.masking import uniform_mod
from pppml_jax.secure.messages import RELAY, Message
from pppml_jax.secure.options import RingOptions
from pppml_jax.secure.quantize import QuantSpec, dequantize, error_bound, make_spec, quantize
from pppml_jax.secure.results import AggregationResult, AggregationStats
from pppml_jax.secure.tree import key_path_name

__all__ = [
    "RELAY",
    "AggregationResult",
    "AggregationStats",
    "Backend",
    "BackendError",
    "BackendInfo",
    "BackendUnavailableError",
    "ClientDropoutError",
    "DecryptionError",
    "Dropout",
    "HospitalKeys",
    "Inject",
    "InvalidOptionError",
    "InvalidUpdateError",
    "KeySet",
    "MalformedCiphertextError",
    "Message",
    "NonFiniteUpdateError",
    "ProtocolError",
    "QuantSpec",
    "RelayKeys",
    "RingOptions",
    "RingTooSmallError",
    "SecureAggregationError",
    "SecureAggregator",
    "StructureMismatchError",
    "Tamper",
    "TamperedMessageError",
    "TwoPartyRingWarning",
    "UnexpectedMessageError",
    "WrongRoundError",
    "WrongSenderError",
    "available_backends",
    "backend_option_names",
    "choose_initiator",
    "clear_aggregator_cache",
    "cyclic_aggregate",
    "dequantize",
    "error_bound",
    "generate_keyset",
    "get_aggregator",
    "key_path_name",
    "make_backend",
    "make_spec",
    "quantize",
    "uniform_mod",
]
