"""``cyclic_aggregate`` and ``SecureAggregator``: the public entry points of secure aggregation.

A :class:`SecureAggregator` owns one backend and its key set, so that slow key generation
(TenSEAL contexts, Concrete keys and circuits) happens once and is reused round after round;
:func:`cyclic_aggregate` keeps a small cache of aggregators keyed by backend options, which is
what a federation engine calling it every round needs. Example::

    import numpy as np
    import pppml_jax as pj

    updates = [{"w": np.full(3, v, np.float32)} for v in (0.1, 0.2, 0.3)]
    res = pj.secure.cyclic_aggregate(updates, [1, 1, 2], backend="bfv", round_index=0)
    res.aggregate["w"]          # ~[0.225, 0.225, 0.225]
    res.stats.bytes_per_param   # bytes per parameter per ring message
"""

from __future__ import annotations

import collections
import dataclasses
import math
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
    SecureAggregationError,
)
from pppml_jax.secure.faults import validate_faults
from pppml_jax.secure.initiator import choose_initiator
from pppml_jax.secure.keys import KeySet, generate_keyset
from pppml_jax.secure.options import RingOptions
from pppml_jax.secure.parties import Channel
from pppml_jax.secure.quantize import error_bound
from pppml_jax.secure.results import AggregationResult, AggregationStats
from pppml_jax.secure.ring import check_ring_size, run_ring
from pppml_jax.secure.tree import (
    FlatUpdates,
    Layout,
    flatten_updates,
    float_eps,
    select_leaves,
)


def _check_weights(weights: Any, n: int) -> list[float]:
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError) as err:
        raise InvalidUpdateError(f"weights must be a sequence of {n} numbers ({err})") from err
    if len(w) != n:
        raise InvalidUpdateError(f"weights has {len(w)} entries but there are {n} updates")
    bad = [i for i, x in enumerate(w) if not (math.isfinite(x) and x >= 0)]
    if bad:
        raise InvalidUpdateError(
            f"weights[{bad[0]}]={w[bad[0]]!r}: weights must be finite and non-negative "
            "(training-sample counts)"
        )
    if sum(w) <= 0:
        raise InvalidUpdateError("weights sum to 0: at least one client needs a positive weight")
    return w


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
        channels.append(Channel("encrypted", backend, layout, pads=False))
    if mask_ids:
        layout = Layout.build(mask_ids, sizes, block=1, per_leaf=False)
        channels.append(Channel("masked", masked_backend, layout, pads=opts.relay_pads))
    enc = int(sum(sizes[i] for i in enc_ids))
    return channels, enc, int(sum(sizes)) - enc


class SecureAggregator:
    """One backend, its key set and its rotation policy, reused across rounds.

    Args:
      backend: ``"plain"``, ``"bfv"``, ``"ckks"`` or ``"concrete"``.
      rotate_every: generate a new key set every this many rounds (``None``: never
        automatically; call :meth:`rotate_keys`).
      **backend_options: the backend's options (``preset``, ``bits``, ...; see
        ``pppml_jax.secure.backends``).

    Raises:
      InvalidOptionError: unknown backend or option.
      BackendUnavailableError: the backend's library is missing.
    """

    def __init__(
        self, backend: str = "plain", *, rotate_every: int | None = None, **backend_options: Any
    ) -> None:
        if rotate_every is not None and not (isinstance(rotate_every, int) and rotate_every >= 1):
            raise InvalidOptionError(f"rotate_every={rotate_every!r}: a positive int or None")
        self.backend = make_backend(backend, **backend_options)
        self.rotate_every = rotate_every
        self._keys: KeySet | None = None

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

    def aggregate(
        self,
        updates: Sequence[Any],
        weights: Sequence[float],
        *,
        round_index: int = 0,
        seed: int | None = None,
        **options: Any,
    ) -> AggregationResult:
        """Runs one round of cyclic secure aggregation (see :func:`cyclic_aggregate`)."""
        if not (isinstance(round_index, (int, np.integer)) and round_index >= 0):
            raise InvalidOptionError(f"round_index={round_index!r}: a non-negative int")
        if seed is not None and not (isinstance(seed, (int, np.integer)) and seed >= 0):
            raise InvalidOptionError(f"seed={seed!r}: a non-negative int or None")
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
        check_ring_size(n, allow_two_party=opts.allow_two_party, context=f"round {round_index}")
        if n > self.backend.max_parties:
            raise InvalidOptionError(
                f"{n} clients exceed the {self.backend.name} backend's max_parties="
                f"{self.backend.max_parties} (its noise margin); raise max_parties"
            )
        faults = validate_faults(opts.faults, n)
        initiator = choose_initiator(
            opts.initiator, round_index=round_index, num_clients=n, seed=seed
        )
        channels, n_enc, n_mask = _channels(flat, self.backend, opts)
        source = (
            masking.system_source
            if opts.mask_seed is None
            else masking.seeded_source(opts.mask_seed)
        )
        sizes = flat.sizes

        def assemble_flat(means: dict[str, np.ndarray]) -> list[np.ndarray]:
            leaves: list[Any] = [None] * len(sizes)
            for ch in channels:
                ch.layout.scatter(means[ch.name], sizes, leaves)
            return leaves

        try:
            keys = self._keys_for(round_index)
            outcome = run_ring(
                flat,
                w,
                round_index=round_index,
                initiator=initiator,
                keys_hospital=keys.hospital,
                keys_relay=keys.relay,
                channels=channels,
                clip=opts.clip,
                stochastic=opts.stochastic_rounding,
                seed=None if seed is None else int(seed),
                on_dropout=opts.on_dropout,
                allow_two_party=opts.allow_two_party,
                faults=faults,
                mask_source=source,
                assemble=lambda means: np.concatenate(assemble_flat(means)),
            )
        except SecureAggregationError:
            raise
        except Exception as err:  # a library failure: keep the one-base-class contract
            raise BackendError(
                f"round {round_index}: the {self.backend.name} backend failed: {err!r}"
            ) from err
        self._keys = keys  # commit a rotation only once the round succeeded
        leaves = assemble_flat(outcome.channel_means)
        aggregate = flat.unflatten(leaves)
        n_part = len(outcome.participants)
        qbound = max(error_bound(spec, n_part) for spec in outcome.specs.values())
        out_round = max(
            float(np.max(np.abs(v))) * float_eps(dt) / 2 if v.size else 0.0
            for v, dt in zip(leaves, flat.dtypes, strict=True)
        )
        ring_msgs = [
            m
            for m in outcome.transcript
            if m.kind == "partial" and m.attempt == outcome.attempts - 1
        ]
        ring_bytes = sum(len(m.payload) for m in ring_msgs)
        stats = AggregationStats(
            backend=self.backend.info(),
            key_id=keys.hospital.key_id,
            num_clients=n,
            participants=outcome.participants,
            dropped=tuple(outcome.dropped),
            offline_after_contributing=tuple(outcome.late_offline),
            attempts=outcome.attempts,
            clipped=dict(outcome.clipped),
            num_params=flat.num_params,
            encrypted_params=n_enc,
            masked_params=n_mask,
            bytes_on_wire=sum(len(m.payload) for m in outcome.transcript),
            ring_bytes=ring_bytes,
            bytes_per_param=ring_bytes / (n_part * flat.num_params),
            messages=len(outcome.transcript),
            seconds=dict(outcome.timer.seconds),
            hop_seconds=tuple(outcome.hop_seconds),
            scales={k: s.scale for k, s in outcome.specs.items()},
            moduli={k: s.modulus for k, s in outcome.specs.items()},
            quantization_bound=qbound,
            error_bound=qbound + out_round,
            faults_triggered=tuple(outcome.faults_triggered),
        )
        return AggregationResult(aggregate, outcome.initiator, outcome.transcript, stats)


_CACHE: collections.OrderedDict[tuple, SecureAggregator] = collections.OrderedDict()
_CACHE_SIZE = 4


def _freeze(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    return value


def get_aggregator(backend: str, **options: Any) -> SecureAggregator:
    """Returns the cached :class:`SecureAggregator` for these backend options (LRU of 4).

    Args:
      backend: backend name.
      **options: backend options and ``rotate_every``.
    """
    key = (backend, _freeze(options))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    aggregator = SecureAggregator(backend, **options)
    _CACHE[key] = aggregator
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return aggregator


def clear_aggregator_cache() -> None:
    """Forgets every cached aggregator (and so every cached key set)."""
    _CACHE.clear()


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
    round_index: int = 0,
    seed: int | None = None,
    **options: Any,
) -> AggregationResult:
    """Aggregates client updates with cyclic secure aggregation (CSA) under encryption.

    The ring starts at the round's initiator, which masks its quantised update with a
    uniform random R; each client adds its own encrypted, quantised, sample-weighted
    update; the initiator removes R, decrypts and dequantises. DESIGN.md ("Secure
    aggregation") and ``docs/secure_aggregation.md`` give the threat model.

    Args:
      updates: list (one per client) of pytrees with one structure; leaves are real arrays
        (e.g. float32 model deltas).
      weights: ``[n]`` non-negative floats (training-sample counts); the aggregate is
        ``sum_i w_i u_i / sum_i w_i``. Weights are public to all parties.
      backend: ``"plain"`` (masking only), ``"ckks"`` (TenSEAL CKKS), ``"bfv"`` (exact packed
        integers, TenSEAL BFV), ``"concrete"`` (Zama Concrete, TFHE).
      round_index: the federation round (>= 0): picks the initiator and is authenticated in
        every message.
      seed: shared seed for ``initiator="seeded"`` and stochastic rounding (``None``: OS
        entropy). The masks never depend on it.
      **options: backend options (``preset``, ``bits``, ``mask_bits``, ``chunk_size``,
        ``max_parties``, ``compress_inputs``, ``poly_modulus_degree``), ``rotate_every``,
        and the protocol options of :class:`RingOptions` (``clip``, ``stochastic_rounding``,
        ``initiator``, ``allow_two_party``, ``on_dropout``, ``encrypt``, ``layout``,
        ``relay_pads``, ``masked_bits``, ``faults``, ``mask_seed``...).

    Returns:
      An :class:`AggregationResult` (``aggregate``, ``initiator``, ``transcript``, ``stats``).

    Raises:
      SecureAggregationError: every failure, as a subclass: ``InvalidOptionError``,
        ``InvalidUpdateError`` (``StructureMismatchError``, ``NonFiniteUpdateError``),
        ``RingTooSmallError``, ``TamperedMessageError``, ``WrongSenderError``,
        ``WrongRoundError``, ``MalformedCiphertextError``, ``ClientDropoutError``,
        ``DecryptionError``, ``BackendUnavailableError``. Inputs are never modified.
    """
    agg_opts, ring_opts = split_options(backend, options)
    aggregator = get_aggregator(backend, **agg_opts)
    return aggregator.aggregate(updates, weights, round_index=round_index, seed=seed, **ring_opts)
