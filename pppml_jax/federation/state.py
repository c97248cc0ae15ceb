"""The federation's state between rounds: everything a resumed run needs, nothing derivable."""

from __future__ import annotations

from typing import Any, NamedTuple

from pppml_jax.typing import ModelState, Params


class FederationState(NamedTuple):
    """State of a federation after ``round`` completed rounds.

    Random choices are derived from ``(seed, round, client id)``, so no PRNG key is stored:
    a state restored from a checkpoint continues exactly as the uninterrupted run would.
    """

    round: int  # number of completed rounds; the next round has index `round`
    params: Params  # the global model (for algorithm "local": the common initial model)
    model_state: ModelState  # global model state (BatchNorm statistics) or None
    server_opt_state: Any  # optax state of the server optimizer
    client_params: Params | None  # [K, ...] every client's own model ("local" only), else None
    client_model_state: ModelState | None  # [K, ...] per-client model state ("local" mode)
