"""The federation's state between rounds: everything a resumed run needs, nothing derivable."""

from __future__ import annotations

from typing import Any, NamedTuple

from pppml_jax.typing import ModelState, Params


class FederationState(NamedTuple):
    """State of a federation after ``round`` completed rounds.

    Random choices are derived from ``(seed, round, client id)``, so no PRNG key is stored:
    a state restored from a checkpoint continues exactly as the uninterrupted run would.
    Per-client fields live on the host (numpy rows, one per client); only the rows of the
    clients a program handles move to the device.
    """

    round: int  # number of completed rounds; the next round has index `round`
    params: Params  # the global model (for algorithm "local": the common initial model)
    model_state: ModelState  # global model state (BatchNorm statistics) or None
    server_state: Any  # the algorithm's server state (e.g. server optimizer state)
    client_state: Any  # [K, ...] the algorithm's per-client state (host numpy), or None
    client_model_state: ModelState | None  # [K, ...] per-client model state, or None

    @property
    def client_params(self) -> Params | None:
        """``[K, ...]`` each client's own whole model, for algorithms that keep one (local,
        ditto, ...: a client state with a ``params`` field), else None."""
        return getattr(self.client_state, "params", None)
