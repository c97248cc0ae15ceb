"""iDLG: recover a training example from its gradient (or local update) by gradient matching.

The label is read off the observed gradient (:func:`~pppml_jax.attacks.label.infer_label`);
then a dummy input is optimised with L-BFGS so that the gradient (or simulated update) it
produces matches the observed one. Restarts from fresh random inputs keep the one with the
lowest matching objective (all an attacker can see). Everything inside one restart is a single
compiled ``jax.lax.while_loop``; the same ``loss_fn`` object reuses that compilation.

References:
  L. Zhu, Z. Liu, S. Han, "Deep Leakage from Gradients", NeurIPS 2019, arXiv:1906.08935.
  B. Zhao, K. R. Mopuri, H. Bilen, "iDLG: Improved Deep Leakage from Gradients",
  arXiv:2001.02610, 2020.
  J. Geiping, H. Bauermeister, H. Droege, M. Moeller, "Inverting Gradients: How easy is it to
  break privacy in federated learning?", NeurIPS 2020, arXiv:2003.14053.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pppml_jax.attacks.label import infer_label, last_layer_kernel
from pppml_jax.attacks.lbfgs import SOLVERS, LbfgsResult, minimize_lbfgs, minimize_optax_lbfgs
from pppml_jax.attacks.objective import DISTANCES, gradient_distance, total_variation
from pppml_jax.attacks.observations import ExampleLossFn, Gradient, LocalUpdate
from pppml_jax.typing import Params

INITS = ("uniform", "normal")
"""Dummy-input initialisations: ``U[0, 1)`` (the image range) or ``N(0, 1)`` (DLG's)."""


@dataclass(frozen=True)
class Reconstruction:
    """The result of an attack.

    Attributes:
      image: ``input_shape`` float32 numpy array, the recovered input (not clipped).
      label: the label used (inferred unless given), a Python int.
      objective: matching objective of the kept restart (distance plus TV term).
      distance: gradient distance of the kept restart (``kind`` of the attack).
      restart: index of the kept restart.
      objectives: final objective of every restart that ran.
      iterations: L-BFGS iterations of every restart that ran.
    """

    image: np.ndarray
    label: int
    objective: float
    distance: float
    restart: int
    objectives: tuple[float, ...]
    iterations: tuple[int, ...]


@functools.partial(
    jax.jit,
    static_argnames=(
        "observation",
        "steps",
        "memory_size",
        "distance",
        "patience",
        "tv_weight",
        "solver",
        "max_move",
    ),
)
def _solve(
    observation: Any,
    params: Params,
    observed: Params,
    label: jax.Array,
    x0: jax.Array,
    tol: jax.Array,
    *,
    steps: int,
    memory_size: int,
    distance: str,
    patience: int,
    tv_weight: float,
    solver: str,
    max_move: float | None,
) -> tuple[LbfgsResult, jax.Array]:
    """One restart: minimise the matching objective from ``x0`` (compiled once per setting)."""

    def match(x: jax.Array) -> jax.Array:
        return gradient_distance(observation(params, x, label), observed, kind=distance)

    def objective(x: jax.Array) -> jax.Array:
        value = match(x)
        if tv_weight:
            value = value + tv_weight * total_variation(x)
        return value

    if solver == "lbfgs":
        result = minimize_lbfgs(
            objective, x0, steps=steps, memory_size=memory_size, tol=tol, patience=patience,
            max_move=max_move,
        )  # fmt: skip
    else:
        result = minimize_optax_lbfgs(
            objective, x0, steps=steps, memory_size=memory_size, tol=tol, patience=patience
        )
    return result, match(result.x)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int")
    return int(value)


def _check_observed(params: Params, observed: Params, what: str) -> Params:
    """Checks structure, shapes and finiteness; returns float32 leaves like ``params``."""
    p_def, o_def = jax.tree.structure(params), jax.tree.structure(observed)
    if p_def != o_def:
        raise ValueError(
            f"{what} has tree structure {o_def} but params has {p_def}; pass the pytree the "
            "client sent, shaped like the model's params"
        )
    out = []
    for p, o in zip(jax.tree.leaves(params), jax.tree.leaves(observed), strict=True):
        if jnp.shape(p) != jnp.shape(o):
            raise ValueError(
                f"{what} has a leaf of shape {jnp.shape(o)} where params has {jnp.shape(p)}"
            )
        o = jnp.asarray(o, jnp.float32)
        if not bool(jnp.all(jnp.isfinite(o))):
            raise ValueError(
                f"{what} holds NaN or infinite values; replace them (e.g. with 0) before attacking"
            )
        out.append(o)
    return jax.tree.unflatten(o_def, out)


def _initial_input(key: jax.Array, input_shape: tuple[int, ...], init: str) -> jax.Array:
    if init == "uniform":
        return jax.random.uniform(key, input_shape, jnp.float32)
    return jax.random.normal(key, input_shape, jnp.float32)


def match_input(
    observation: Gradient | LocalUpdate,
    params: Params,
    observed: Params,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    steps: int = 300,
    seed: int = 0,
    label: int | None = None,
    restarts: int = 1,
    tv_weight: float = 0.0,
    distance: str = "l2",
    tol: float = 1e-9,
    init: str = "uniform",
    memory_size: int = 100,
    patience: int = 20,
    solver: str = "lbfgs",
    max_move: float | None = 0.5,
    label_path: str | None = None,
) -> Reconstruction:
    """Recovers the input whose ``observation`` matches ``observed`` (the engine of the attacks).

    Restart r starts from a random input drawn with ``fold_in(key(seed), r)`` (the same start
    whatever the number of restarts); restarts stop early once one reaches ``tol``; the
    restart with the lowest objective is kept.

    Args:
      observation: a :class:`~pppml_jax.attacks.observations.Gradient` or
        :class:`~pppml_jax.attacks.observations.LocalUpdate` (what the client computed).
      params: the model parameters the client used (known to the attacker: the global model).
      observed: the observed pytree (gradient or update), shaped like ``params``; finite.
      input_shape: shape of one input ``x`` as ``loss_fn`` takes it (e.g. ``(32, 32, 1)``).
      num_classes: number of classes of the model's output.
      steps: the most solver iterations per restart (``"lbfgs"``: objective evaluations;
        ``"optax"``: line searches).
      seed: seed of the random starting inputs.
      label: the label to use; ``None`` infers it with iDLG's sign rule.
      restarts: the most restarts (>= 1).
      tv_weight: weight of the total-variation prior (0 disables it; needs channels-last
        ``[..., H, W, C]`` inputs).
      distance: ``"l2"`` or ``"cosine"`` (:func:`~pppml_jax.attacks.objective.gradient_distance`).
      tol: stop a restart once its objective is ``<= tol``.
      init: ``"uniform"`` (``U[0, 1)``) or ``"normal"`` (``N(0, 1)``).
      memory_size: L-BFGS memory (curvature pairs; a long memory is cheap next to the
        second-order objective and cuts iterations about in half from 10 to 100).
      patience: stop after this many iterations without relative progress.
      solver: ``"lbfgs"`` (:func:`~pppml_jax.attacks.lbfgs.minimize_lbfgs`, Armijo
        backtracking, compiles fast) or ``"optax"`` (``optax.lbfgs`` with a zoom line search).
      max_move: ``"lbfgs"`` only: no pixel moves by more than this in one step (input units;
        ``None``: no limit). Without it a unit quasi-Newton step can throw the dummy input
        onto a saturated plateau where its gradient vanishes (objective 1), a dead end.
      label_path: key path of the output kernel for label inference (default: the last 2-D
        leaf).

    Returns:
      A :class:`Reconstruction`.

    Raises:
      ValueError: a bad option, ``observed`` not shaped like ``params`` or not finite, or an
        output kernel whose class count differs from ``num_classes``.
    """
    input_shape = tuple(_positive_int("input_shape entry", int(d)) for d in input_shape)
    num_classes = _positive_int("num_classes", num_classes)
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must be at least 2")
    steps = _positive_int("steps", steps)
    restarts = _positive_int("restarts", restarts)
    memory_size = _positive_int("memory_size", memory_size)
    patience = _positive_int("patience", patience)
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not one of {DISTANCES}")
    if max_move is not None and not (np.isfinite(max_move) and max_move > 0):
        raise ValueError(f"max_move={max_move!r} must be a positive number or None")
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is not one of {SOLVERS}")
    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {INITS}")
    if not (tv_weight >= 0 and np.isfinite(tv_weight)):
        raise ValueError(f"tv_weight={tv_weight!r} must be a finite number >= 0")
    if tv_weight and (len(input_shape) < 3 or min(input_shape[-3:-1]) < 2):
        raise ValueError(
            f"tv_weight={tv_weight} needs channels-last images [..., H, W, C] with H, W >= 2; "
            f"input_shape is {input_shape}"
        )
    observed = _check_observed(params, observed, "observed")
    kernel_classes = last_layer_kernel(observed, path=label_path).shape[-1]
    if kernel_classes != num_classes:
        raise ValueError(
            f"num_classes={num_classes} but the output kernel has {kernel_classes} columns; "
            "pass the model's number of classes (or label_path= for another layer)"
        )
    if label is None:
        label = infer_label(observed, path=label_path)
    elif not (isinstance(label, (int, np.integer)) and 0 <= label < num_classes):
        raise ValueError(f"label={label!r} must be an int in [0, {num_classes})")
    label = int(label)

    key = jax.random.key(seed)
    best: tuple[float, int, jax.Array, float] | None = None
    objectives, iterations = [], []
    for r in range(restarts):
        x0 = _initial_input(jax.random.fold_in(key, r), input_shape, init)
        result, dist = _solve(
            observation,
            params,
            observed,
            jnp.asarray(label, jnp.int32),
            x0,
            jnp.asarray(tol, jnp.float32),
            steps=steps,
            memory_size=memory_size,
            distance=distance,
            patience=patience,
            tv_weight=float(tv_weight),
            solver=solver,
            max_move=None if max_move is None else float(max_move),
        )
        value = float(result.value)
        objectives.append(value)
        iterations.append(int(result.iterations))
        if best is None or value < best[0] or (np.isnan(best[0]) and not np.isnan(value)):
            best = (value, r, result.x, float(dist))
        if value <= tol:
            break
    assert best is not None
    value, r, x, dist = best
    return Reconstruction(
        image=np.asarray(x, np.float32),
        label=label,
        objective=value,
        distance=dist,
        restart=r,
        objectives=tuple(objectives),
        iterations=tuple(iterations),
    )


def idlg(
    loss_fn: ExampleLossFn,
    params: Params,
    observed_grads: Params,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    steps: int = 300,
    seed: int = 0,
    **options: Any,
) -> Reconstruction:
    """iDLG: recovers one training example and its label from the gradient of its loss.

    Args:
      loss_fn: ``loss_fn(params, x, label) -> scalar`` for one example ``x`` of
        ``input_shape`` and an int32 scalar ``label`` (e.g. cross-entropy of
        ``model.apply({"params": params}, x[None])[0]``). Pass the same function object on
        every call to reuse the compiled attack.
      params: the model parameters the gradient was taken at.
      observed_grads: the observed gradient, shaped like ``params``.
      input_shape: shape of ``x`` (e.g. ``(32, 32, 1)``, channels last).
      num_classes: the model's number of classes.
      steps: the most L-BFGS iterations per restart. The reference setting's "300 iterations"
        are 300 calls of PyTorch's ``LBFGS.step``, each up to 20 inner iterations (up to 25
        evaluations); here one iteration is one evaluation of the objective and its gradient.
      seed: seed of the random starting inputs (the result is a deterministic function of it).
      **options: ``label``, ``restarts``, ``tv_weight``, ``distance``, ``tol``, ``init``,
        ``memory_size``, ``patience``, ``solver``, ``max_move``, ``label_path`` (see
        :func:`match_input`).

    Returns:
      A :class:`Reconstruction`: ``.image`` of ``input_shape``, ``.label`` an int.

    Raises:
      ValueError: see :func:`match_input`.

    Example::

        model = pj.models.LeNet(num_classes=2)
        params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))["params"]
        loss_fn = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(
            model.apply({"params": p}, x[None])[0], y)
        grads = jax.grad(loss_fn)(params, image, 1)
        rec = pj.attacks.idlg(loss_fn, params, grads, input_shape=(32, 32, 1),
                              num_classes=2, steps=1000)
        rec.label, pj.metrics.psnr(rec.image, image)
    """
    return match_input(
        Gradient(loss_fn),
        params,
        observed_grads,
        input_shape=input_shape,
        num_classes=num_classes,
        steps=steps,
        seed=seed,
        **options,
    )


def idlg_update(
    loss_fn: ExampleLossFn,
    params: Params,
    observed_update: Params,
    *,
    input_shape: Sequence[int],
    num_classes: int,
    local_steps: int,
    lr: float,
    steps: int = 300,
    seed: int = 0,
    **options: Any,
) -> Reconstruction:
    """Recovers one example from the model difference a FedAvg client sends after K SGD steps.

    The attacker knows the global model ``params``, the client's step size and step count
    (FedAvg hyper-parameters are public) and observes ``theta_0 - theta_K``. It infers the
    label with the same sign rule (the update is a positive sum of gradients of that example)
    and matches the simulated K-step update of a dummy input to the observed one.

    Args:
      loss_fn: ``loss_fn(params, x, label) -> scalar`` (see :func:`idlg`).
      params: ``theta_0``, the model the client started from.
      observed_update: ``theta_0 - theta_K``, shaped like ``params``.
      input_shape: shape of ``x``.
      num_classes: the model's number of classes.
      local_steps: K, the client's SGD steps on the example.
      lr: the client's step size.
      steps: the most L-BFGS iterations per restart.
      seed: seed of the random starting inputs.
      **options: see :func:`match_input`.

    Returns:
      A :class:`Reconstruction`.

    Raises:
      ValueError: see :func:`match_input`; ``local_steps`` or ``lr`` not positive.

    References:
      J. Geiping et al., "Inverting Gradients", NeurIPS 2020, arXiv:2003.14053 (section 5).
    """
    return match_input(
        LocalUpdate(loss_fn, local_steps, float(lr)),
        params,
        observed_update,
        input_shape=input_shape,
        num_classes=num_classes,
        steps=steps,
        seed=seed,
        **options,
    )
