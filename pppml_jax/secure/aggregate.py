"""``cyclic_aggregate`` and ``SecureAggregator``: the public entry points of secure aggregation.

A :class:`SecureAggregator` owns one backend and its key set, so that slow key generation
(TenSEAL contexts, Concrete keys) happens once per run and is reused round after round, and
refuses a round index that already completed under its keys. :func:`cyclic_aggregate` makes a
fresh aggregator (fresh keys) on every call. Example::

    import numpy as np
    import pppml_jax as pj

    updates = [{"w": np.full(3, v, np.float32)} for v in (0.1, 0.2, 0.3)]
    res = pj.secure.cyclic_aggregate(updates, [1, 1, 2], backend="bfv", round_index=0)
    res.aggregate["w"]          # ~[0.225, 0.225, 0.225]
    res.stats.bytes_per_param   # bytes per parameter per ring message
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pppml_jax.secure import masking
from pppml_jax.secure.backends import (
    Backend,
    PlainBackend,
    PlainConfig,
    backend_option_names,
    make_backend,
)
from pppml_jax.secure.errors import (
    BackendError,
    InvalidOptionError,
    InvalidUpdateError,
    ReusedRoundError,
    SecureAggregationError,
)
from pppml_jax.secure.faults import validate_faults
from pppml_jax.secure.initiator import choose_initiator
from pppml_jax.secure.keys import KeySet, generate_keyset
from pppml_jax.secure.messages import SESSION_BYTES
from pppml_jax.secure.options import RingOptions
from pppml_jax.secure.parties import Channel
from pppml_jax.secure.results import AggregationResult, build_result
from pppml_jax.secure.ring import check_ring_size, run_ring
from pppml_jax.secure.tree import FlatUpdates, Layout, flatten_updates, select_leaves


def _check_weights(weights: Any, n: int) -> list[float]:
    """Validates weights and scales them so the largest is 1 (no overflow in their sum)."""
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError, OverflowError) as err:
        raise InvalidUpdateError(f"weights must be a sequence of {n} numbers ({err})") from err
    if len(w) != n:
        raise InvalidUpdateError(f"weights has {len(w)} entries but there are {n} updates")
    bad = [i for i, x in enumerate(w) if not (math.isfinite(x) and x >= 0)]
    if bad:
        raise InvalidUpdateError(
            f"weights[{bad[0]}]={w[bad[0]]!r}: weights must be finite and non-negative "
            "(training-sample counts)"
        )
    top = max(w)
    if top <= 0:
        raise InvalidUpdateError("weights sum to 0: at least one client needs a positive weight")
    return [x / top for x in w]


def _pairwise_for(backend: Backend, pairwise: bool | None, name: str) -> bool:
    exact_mod = backend.name in ("plain", "bfv")
    if pairwise and not exact_mod:
        raise InvalidOptionError(
            f"pairwise=True: the {backend.name} backend's {name} ciphertexts cannot carry "
            "pairwise masks (they need exact sums modulo M); use backend='bfv', or "
            "pairwise=None to mask only the masked-only channel"
        )
    return exact_mod if pairwise is None else bool(pairwise)


def _channels(
    flat: FlatUpdates, backend: Backend, opts: RingOptions
) -> tuple[list[Channel], int, int]:
    sizes = flat.sizes
    masked_backend = PlainBackend(PlainConfig(bits=opts.masked_bits))
    per_leaf = opts.layout == "per_leaf"
    if backend.name == "plain":
        chosen = tuple(False for _ in sizes)
        masked_backend = backend
    else:
        chosen = select_leaves(
            flat.names, flat.shapes, opts.encrypt, auto_max_values=opts.auto_max_values
        )
    enc_ids = [i for i, c in enumerate(chosen) if c]
    mask_ids = [i for i, c in enumerate(chosen) if not c]
    channels = []
    if enc_ids:
        layout = Layout.build(enc_ids, sizes, block=backend.slots, per_leaf=per_leaf)
        pw = _pairwise_for(backend, opts.pairwise, "encrypted")
        channels.append(Channel("encrypted", backend, layout, pads=False, pairwise=pw))
    if mask_ids:
        layout = Layout.build(mask_ids, sizes, block=1, per_leaf=False)
        pw = _pairwise_for(masked_backend, opts.pairwise, "masked")
        channels.append(
            Channel("masked", masked_backend, layout, pads=opts.relay_pads, pairwise=pw)
        )
    enc = int(sum(sizes[i] for i in enc_ids))
    return channels, enc, int(sum(sizes)) - enc


class SecureAggregator:
    """One backend, its key set and its rotation policy, reused across the rounds of one run.

    Make one per federation run: a new aggregator has a fresh key set (a new ``key_id``), so a
    new run, or a run resumed in a new process, never collides with an earlier one. Under one
    key set each round index may complete once: calling :meth:`aggregate` again with a round
    index that already completed raises :class:`ReusedRoundError`. A round that *failed* (any
    :class:`SecureAggregationError`) is not consumed and may be retried with the same index;
    the retry runs under a fresh session id, so nothing of the failed try can be replayed.

    Args:
      backend: ``"plain"``, ``"bfv"``, ``"ckks"`` or ``"concrete"``.
      rotate_every: generate a new key set every this many rounds (``None``: never
        automatically; call :meth:`rotate_keys`).
      record_pair_secrets: SIMULATION ONLY: keep every hospital's pairwise secrets of each
        session (:meth:`pair_secrets`) so that attack code can play colluding hospitals.
      **backend_options: the backend's options (``preset``, ``bits``, ...; see
        ``pppml_jax.secure.backends``).

    Raises:
      InvalidOptionError: unknown backend or option.
      BackendUnavailableError: the backend's library is missing.
    """

    def __init__(
        self,
        backend: str = "plain",
        *,
        rotate_every: int | None = None,
        record_pair_secrets: bool = False,
        **backend_options: Any,
    ) -> None:
        if rotate_every is not None and not (isinstance(rotate_every, int) and rotate_every >= 1):
            raise InvalidOptionError(f"rotate_every={rotate_every!r}: a positive int or None")
        self.backend = make_backend(backend, **backend_options)
        self.rotate_every = rotate_every
        self._keys: KeySet | None = None
        self._completed: set[tuple[str, int]] = set()
        self._sessions: set[bytes] = set()
        self._record = bool(record_pair_secrets)
        self._pair_secrets: dict[bytes, dict[int, Any]] = {}
        self._test_mask_source: masking.ByteSource | None = None  # tests only, never options

    @property
    def keys(self) -> KeySet:
        """The current key set (generated on first use)."""
        if self._keys is None:
            self._keys = self._new_keys(0)
        return self._keys

    def _new_keys(self, round_index: int) -> KeySet:
        return generate_keyset(self.backend, round_index=round_index)

    def rotate_keys(self, *, round_index: int = 0) -> KeySet:
        """Replaces the key set by a fresh one and returns it."""
        self._keys = self._new_keys(round_index)
        return self._keys

    def _keys_for(self, round_index: int) -> KeySet:
        """The key set a round uses (a fresh one when rotation is due; not yet stored)."""
        if self._keys is None:
            return self._new_keys(round_index)
        if self.rotate_every is not None:
            age = round_index - self._keys.created_round
            if age >= self.rotate_every or age < 0:
                return self._new_keys(round_index)
        return self._keys

    def completed_rounds(self) -> frozenset[tuple[str, int]]:
        """``(key_id, round_index)`` of every round that completed under this aggregator."""
        return frozenset(self._completed)

    def pair_secrets(self, session: bytes) -> dict[int, Any]:
        """SIMULATION ONLY: each hospital's pairwise material (``PairParty``) of a session.

        Needs ``record_pair_secrets=True``; used to play colluding hospitals (attack views,
        threat-model tests). A real hospital never hands its pair keys to anyone.
        """
        if not self._record:
            raise InvalidOptionError(
                "pair_secrets needs SecureAggregator(..., record_pair_secrets=True)"
            )
        return self._pair_secrets[bytes(session)]

    def aggregate(
        self,
        updates: Sequence[Any],
        weights: Sequence[float],
        *,
        round_index: int,
        seed: int | None = None,
        **options: Any,
    ) -> AggregationResult:
        """Runs one round of cyclic secure aggregation (arguments: :func:`cyclic_aggregate`).

        Raises:
          ReusedRoundError: ``round_index`` already completed under the current key set.
          SecureAggregationError: every other failure (see :func:`cyclic_aggregate`); a
            failure consumes nothing, so the round may be retried.
        """
        if isinstance(round_index, bool) or not (
            isinstance(round_index, (int, np.integer)) and round_index >= 0
        ):
            raise InvalidOptionError(f"round_index={round_index!r}: a non-negative int")
        if seed is not None and not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise InvalidOptionError(f"seed={seed!r}: a non-negative int or None")
        if "mask_seed" in options:
            raise InvalidOptionError(
                "mask_seed is no longer an option: masks always come from the operating "
                "system's cryptographic generator (tests use a private hook)"
            )
        allowed = {f.name for f in dataclasses.fields(RingOptions)}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise InvalidOptionError(
                f"unknown option(s) {unknown}; protocol options are {sorted(allowed)} and "
                f"backend {self.backend.name!r} options are "
                f"{list(backend_option_names(self.backend.name))} (set on the aggregator)"
            )
        opts = RingOptions(**options).validated(self.backend)
        round_index = int(round_index)
        flat = flatten_updates(updates)
        n = len(flat.leaves)
        w = _check_weights(weights, n)
        members = [i for i in range(n) if w[i] > 0]
        check_ring_size(
            len(members), allow_two_party=opts.allow_two_party, context=f"round {round_index}"
        )
        if len(members) > self.backend.max_parties:
            raise InvalidOptionError(
                f"{len(members)} clients exceed the {self.backend.name} backend's max_parties="
                f"{self.backend.max_parties} (its noise margin); raise max_parties"
            )
        faults = validate_faults(opts.faults, n)
        first = choose_initiator(
            opts.initiator, round_index=round_index, num_clients=len(members), seed=seed
        )
        channels, n_enc, n_mask = _channels(flat, self.backend, opts)
        keys = self._keys_for(round_index)
        if (keys.hospital.key_id, round_index) in self._completed:
            raise ReusedRoundError(
                f"round_index={round_index} already completed under key set "
                f"{keys.hospital.key_id}; each round index may complete once per key set "
                "(use a new SecureAggregator for a new run, or rotate_keys())"
            )
        session = secrets.token_bytes(SESSION_BYTES)
        if session in self._sessions:  # pragma: no cover - 2^-128
            raise ReusedRoundError("session id collision; retry")
        source = self._test_mask_source or masking.system_source
        published: dict[str, Any] = {}

        def publish(means: dict[str, np.ndarray], ranges: np.ndarray, share: float) -> bytes:
            leaves: list[Any] = [None] * len(flat.sizes)
            for ch in channels:
                ch.layout.scatter(means[ch.name], flat.sizes, leaves)
            cast = [
                np.ascontiguousarray(np.asarray(v).astype(dt))
                for v, dt in zip(leaves, flat.dtypes, strict=True)
            ]
            published["leaves"] = cast
            return b"".join(c.tobytes() for c in cast)

        try:
            outcome = run_ring(
                flat,
                w,
                members=members,
                round_index=round_index,
                session=session,
                initiator=members[first],
                keys_hospital=keys.hospital,
                keys_relay=keys.relay,
                channels=channels,
                clip=opts.clip,
                stochastic=opts.stochastic_rounding,
                seed=None if seed is None else int(seed),
                on_dropout=opts.on_dropout,
                allow_two_party=opts.allow_two_party,
                threshold=opts.threshold,
                faults=faults,
                mask_source=source,
                publish=publish,
                keep_pairs=self._pair_secrets.setdefault(session, {}) if self._record else None,
            )
        except SecureAggregationError:
            raise
        except Exception as err:  # a library failure: keep the one-base-class contract
            raise BackendError(
                f"round {round_index}: the {self.backend.name} backend failed: {err!r}"
            ) from err
        self._keys = keys  # commit a rotation only once the round succeeded
        self._completed.add((keys.hospital.key_id, round_index))
        self._sessions.add(session)
        return build_result(
            flat,
            published["leaves"],
            outcome,
            channels=channels,
            backend=self.backend,
            key_id=keys.hospital.key_id,
            session=session,
            clip=opts.clip,
            num_clients=n,
            encrypted_params=n_enc,
            masked_params=n_mask,
            round_index=round_index,
        )


def split_options(backend: str, options: Mapping[str, Any]) -> tuple[dict, dict]:
    """Splits options into the aggregator's and the round's.

    Args:
      backend: backend name.
      options: backend options, ``rotate_every`` and protocol options, mixed.

    Returns:
      ``(aggregator options, protocol options)``: the first holds the backend's options and
      ``rotate_every`` (for :class:`SecureAggregator`), the second everything else (for
      :meth:`SecureAggregator.aggregate`).
    """
    names = set(backend_option_names(backend)) if isinstance(backend, str) else set()
    names.add("rotate_every")
    agg_opts = {k: v for k, v in options.items() if k in names}
    ring_opts = {k: v for k, v in options.items() if k not in names}
    return agg_opts, ring_opts


def cyclic_aggregate(
    updates: Sequence[Any],
    weights: Sequence[float],
    *,
    backend: str = "plain",
    round_index: int,
    seed: int | None = None,
    **options: Any,
) -> AggregationResult:
    """Aggregates client updates with cyclic secure aggregation (CSA) under encryption.

    Each call makes a fresh :class:`SecureAggregator` (a fresh key set), so calls never share
    keys, sessions or pads. A federation that aggregates every round should keep one
    :class:`SecureAggregator` per run instead (key generation is then paid once). The ring
    starts at the round's initiator, which masks its quantised update with a uniform random
    R; each client adds its own encrypted, quantised, sample-weighted (and, by default,
    pairwise-masked) update; the initiator removes R, decrypts and dequantises.
    ``docs/secure_aggregation.md`` gives the threat model.

    Args:
      updates: list (one per client) of pytrees with one structure; leaves are real
        floating-point arrays (e.g. float32 model deltas); integer and complex leaves are
        refused.
      weights: ``[n]`` non-negative finite floats (training-sample counts); the aggregate is
        ``sum_i w_i u_i / sum_i w_i``. Weights are public to all parties; clients of weight 0
        stay out of the ring, and at least 3 clients need a positive weight.
      backend: ``"plain"`` (masking only), ``"ckks"`` (TenSEAL CKKS), ``"bfv"`` (exact packed
        integers, TenSEAL BFV), ``"concrete"`` (Zama Concrete, TFHE).
      round_index: the federation round (>= 0), required: picks the initiator and is
        authenticated in every message.
      seed: shared seed for ``initiator="seeded"`` and stochastic rounding (``None``: OS
        entropy). The masks never depend on it.
      **options: backend options (``preset``, ``bits``, ``mask_bits``, ``chunk_size``,
        ``max_parties``, ``compress_inputs``, ``poly_modulus_degree``), ``rotate_every``,
        and the protocol options of :class:`RingOptions` (``clip``, ``pairwise``,
        ``threshold``, ``stochastic_rounding``, ``initiator``, ``allow_two_party``,
        ``on_dropout``, ``encrypt``, ``layout``, ``relay_pads``, ``masked_bits``,
        ``faults``).

    Returns:
      An :class:`AggregationResult` (``aggregate``, ``initiator``, ``transcript``, ``stats``).

    Warns:
      ClippingWarning: values beyond an explicit ``clip`` were clipped.

    Raises:
      SecureAggregationError: every failure, as a subclass: ``InvalidOptionError``,
        ``InvalidUpdateError`` (``StructureMismatchError``, ``NonFiniteUpdateError``),
        ``RingTooSmallError``, ``TamperedMessageError``, ``WrongSenderError``,
        ``WrongRoundError``, ``ReplayedMessageError``, ``WrongContextError``,
        ``MalformedCiphertextError``, ``ClientDropoutError``, ``DecryptionError``,
        ``BackendUnavailableError``. Inputs are never modified.
    """
    agg_opts, ring_opts = split_options(backend, options)
    aggregator = SecureAggregator(backend, **agg_opts)
    return aggregator.aggregate(updates, weights, round_index=round_index, seed=seed, **ring_opts)
