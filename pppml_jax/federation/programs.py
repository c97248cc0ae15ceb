"""The compiled programs of a federation, shared with every federation of equal static pieces."""

from __future__ import annotations

from collections.abc import Callable

from pppml_jax.algorithms.base import Algorithm, Context
from pppml_jax.federation.compilation import algorithm_key, fingerprint, shared
from pppml_jax.federation.config import FederationConfig
from pppml_jax.federation.evaluation import Evaluator
from pppml_jax.federation.training import Trainer


def shared_programs(
    algorithm: Algorithm,
    make_ctx: Callable[[dict], Context],
    config: FederationConfig,
    *,
    loss_fn: Callable,
    eval_fn: Callable | None,
    wrapped_eval: Callable | None,
    stateful: bool,
    participation: float,
    eval_chunk: int,
) -> tuple[Trainer, Evaluator]:
    """The :class:`Trainer` and :class:`Evaluator` of a federation, built once per key.

    The keys hold what is baked into the compiled programs (the algorithm's functions, the
    loss and metric, optimizer factories, integer and boolean options); seeds and float
    hyper-parameters are arguments of the programs, so they are not part of the keys.

    Args:
      loss_fn, eval_fn: the user's functions (their fingerprints key the cache).
      wrapped_eval: ``eval_fn`` in the engine's stateful form (what the programs call).
      stateful: whether the model carries state.
      participation: sampled clients per round / all clients.
      eval_chunk: test examples per evaluated chunk.
    """
    local_state = stateful and config.model_state_mode == "local"
    averages = stateful and config.model_state_mode == "average"
    ctx_key = (
        fingerprint(loss_fn),
        stateful,
        fingerprint(config.local_optimizer),
        fingerprint(config.server_optimizer),
        config.local_steps,
        participation,
        algorithm_key(algorithm),
        config.batch_size,
        config.batch_rng,
        local_state,
    )
    trainer = shared(
        "trainer",
        (*ctx_key, config.unroll, averages),
        lambda: Trainer(
            algorithm,
            make_ctx,
            local_steps=config.local_steps,
            batch_size=config.batch_size,
            batch_rng=config.batch_rng,
            unroll=config.unroll,
            local_model_state=local_state,
            averages_state=averages,
        ),
    )
    evaluator = shared(
        "evaluator",
        (*ctx_key, fingerprint(eval_fn), eval_chunk, config.personalize_steps),
        lambda: Evaluator(
            algorithm,
            make_ctx,
            wrapped_eval,
            eval_chunk=eval_chunk,
            personalize_steps=config.personalize_steps,
            batch_size=config.batch_size,
            batch_rng=config.batch_rng,
            local_model_state=local_state,
        ),
    )
    return trainer, evaluator
