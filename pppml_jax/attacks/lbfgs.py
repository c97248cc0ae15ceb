"""L-BFGS in one ``jax.lax.while_loop``: our own Armijo version and optax's zoom line search.

:func:`minimize_lbfgs` evaluates the objective in exactly one place of the loop body (a trial
point; accepted when it decreases the objective enough, else the step is halved). Gradient
matching differentiates through a gradient, so every copy of the objective in the program is
a second-order graph: one copy compiles several times faster than optax's zoom line search,
which traces the objective in several branches (:func:`minimize_optax_lbfgs`, kept as the
reference solver). Both are pure, jit- and vmap-able.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

SOLVERS = ("lbfgs", "optax")
"""Solver names: ``"lbfgs"`` (:func:`minimize_lbfgs`), ``"optax"`` (``minimize_optax_lbfgs``)."""

_ARMIJO = 1e-4  # sufficient-decrease constant c1
_PROGRESS = 1e-6  # relative decrease of the best value that counts as progress
_RESET_AFTER = 10  # rejected trials in a row before the memory is dropped
_MAX_REJECTS = 30  # rejected trials in a row before giving up


class LbfgsResult(NamedTuple):
    """The outcome of a minimisation.

    Attributes:
      x: the point with the lowest objective value seen, shaped like ``x0``.
      value: float32 scalar, the objective at ``x``.
      iterations: int32 scalar, iterations run (for :func:`minimize_lbfgs` one objective
        evaluation each; for :func:`minimize_optax_lbfgs` one line search each).
    """

    x: jax.Array
    value: jax.Array
    iterations: jax.Array


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int")


class _State(NamedTuple):
    i: jax.Array  # [] int32 evaluations done
    x: jax.Array  # [d] current accepted point
    f: jax.Array  # [] objective at x
    g: jax.Array  # [d] gradient at x
    direction: jax.Array  # [d] search direction from x
    step: jax.Array  # [] trial step length along direction
    s: jax.Array  # [m, d] position differences, circular
    y: jax.Array  # [m, d] gradient differences, circular
    rho: jax.Array  # [m] 1 / <s, y>
    stored: jax.Array  # [] int32 pairs stored (<= m)
    head: jax.Array  # [] int32 slot of the next pair
    best_x: jax.Array  # [d]
    best_f: jax.Array  # []
    stalled: jax.Array  # [] int32 accepted steps in a row without relative progress
    rejects: jax.Array  # [] int32 rejected trial points in a row


def _two_loop(g, s, y, rho, stored, head, memory):
    """``-H g`` with the L-BFGS inverse-Hessian estimate (Nocedal & Wright, algorithm 7.4)."""
    order = (head - 1 - jnp.arange(memory)) % memory  # newest first
    valid = jnp.arange(memory) < stored

    def backward(j, carry):
        q, alphas = carry
        k = order[j]
        alpha = jnp.where(valid[j], rho[k] * jnp.vdot(s[k], q), 0.0)
        return q - alpha * y[k], alphas.at[j].set(alpha)

    q, alphas = jax.lax.fori_loop(0, memory, backward, (g, jnp.zeros(memory, g.dtype)))
    newest = order[0]
    yy = jnp.vdot(y[newest], y[newest])
    gamma = jnp.where(stored > 0, 1.0 / jnp.maximum(rho[newest] * yy, 1e-30), 1.0)
    r = gamma * q

    def forward(j, r):
        jj = memory - 1 - j  # oldest first
        k = order[jj]
        beta = rho[k] * jnp.vdot(y[k], r)
        return jnp.where(valid[jj], r + s[k] * (alphas[jj] - beta), r)

    return -jax.lax.fori_loop(0, memory, forward, r)


def _first_step(g: jax.Array) -> jax.Array:
    """Length of a steepest-descent step without curvature information (PyTorch's choice)."""
    return jnp.minimum(1.0, 1.0 / jnp.maximum(jnp.sum(jnp.abs(g)), 1e-30))


def minimize_lbfgs(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    steps: int,
    memory_size: int = 10,
    tol: float | jax.Array = 0.0,
    patience: int = 10,
    max_move: float | None = None,
) -> LbfgsResult:
    """Minimises ``fun`` from ``x0`` with L-BFGS and a backtracking (Armijo) line search.

    Each iteration evaluates ``fun`` and its gradient once, at the trial point ``x + t d``.
    If it lowers the objective by at least ``1e-4 t <g, d>`` it is accepted, a curvature pair
    is stored (when ``<s, y> > 0``) and the next trial is the unit quasi-Newton step;
    otherwise ``t`` shrinks to the minimiser of the quadratic through ``f(x)``, ``<g, d>`` and
    the trial's value (kept within ``[0.01 t, 0.5 t]``). After 10 rejections in a row the
    memory is dropped and the search restarts along ``-g`` with the first-step length
    ``min(1, 1 / ||g||_1)`` (PyTorch's ``LBFGS``). The loop stops after ``steps``
    evaluations, once the best value is ``<= tol``, after ``patience`` accepted steps in a
    row that did not lower the best value by a relative ``1e-6``, or after 30 rejections in
    a row (no decrease can be found in float32).

    Args:
      fun: ``fun(x) -> scalar``, differentiable.
      x0: the starting point (any float shape).
      steps: the most objective evaluations (a Python int).
      memory_size: curvature pairs kept.
      tol: stop once the objective is ``<= tol``.
      patience: accepted steps without relative progress before stopping.
      max_move: if given, every new trial step is shortened so that no coordinate moves by
        more than this (a trust region in the units of ``x``, e.g. 1.0 for pixels in
        ``[0, 1]``: keeps a unit quasi-Newton step from jumping onto a saturated plateau).

    Returns:
      An :class:`LbfgsResult`.

    Raises:
      ValueError: ``steps``, ``memory_size`` or ``patience`` is not a positive int, or
        ``max_move`` is not positive.

    References:
      J. Nocedal, S. J. Wright, Numerical Optimization, 2nd ed., 2006, algorithms 7.4, 7.5
      and section 3.5 (interpolating backtracking).
    """
    _check_positive(steps=steps, memory_size=memory_size, patience=patience)
    if max_move is not None and not max_move > 0:
        raise ValueError(f"max_move={max_move!r} must be positive or None")
    x0 = jnp.asarray(x0)
    shape, dtype = x0.shape, jnp.promote_types(x0.dtype, jnp.float32)

    def flat_fun(v):
        return jnp.asarray(fun(v.reshape(shape)), jnp.float32)

    value_and_grad = jax.value_and_grad(flat_fun)
    x = x0.reshape(-1).astype(dtype)
    d = x.size
    # The first iteration evaluates x0 itself (step 0 from an infinite value, always accepted),
    # so that the objective appears once in the program.
    state = _State(
        i=jnp.zeros((), jnp.int32),
        x=x,
        f=jnp.asarray(jnp.inf, jnp.float32),
        g=jnp.zeros_like(x),
        direction=jnp.zeros_like(x),
        step=jnp.zeros((), dtype),
        s=jnp.zeros((memory_size, d), dtype),
        y=jnp.zeros((memory_size, d), dtype),
        rho=jnp.zeros((memory_size,), dtype),
        stored=jnp.zeros((), jnp.int32),
        head=jnp.zeros((), jnp.int32),
        best_x=x,
        best_f=jnp.asarray(jnp.inf, jnp.float32),
        stalled=jnp.zeros((), jnp.int32),
        rejects=jnp.zeros((), jnp.int32),
    )

    def cond(st: _State):
        return (
            (st.i < steps)
            & (st.best_f > tol)
            & (st.stalled < patience)
            & (st.rejects < _MAX_REJECTS)
        )

    def body(st: _State) -> _State:
        slope = jnp.vdot(st.g, st.direction)
        trial = st.x + st.step * st.direction
        f_t, g_t = value_and_grad(trial)
        ok = jnp.isfinite(f_t) & jnp.all(jnp.isfinite(g_t))
        accept = ok & (f_t <= st.f + _ARMIJO * st.step * slope)

        # Accepted: store the curvature pair and take the quasi-Newton direction.
        s_new, y_new = trial - st.x, g_t - st.g
        sy = jnp.vdot(s_new, y_new)
        store = accept & (sy > 1e-10 * jnp.vdot(y_new, y_new))
        s_mem = jnp.where(store, st.s.at[st.head].set(s_new), st.s)
        y_mem = jnp.where(store, st.y.at[st.head].set(y_new), st.y)
        rho = jnp.where(store, st.rho.at[st.head].set(1.0 / jnp.where(store, sy, 1.0)), st.rho)
        stored = jnp.where(store, jnp.minimum(st.stored + 1, memory_size), st.stored)
        head = jnp.where(store, (st.head + 1) % memory_size, st.head)
        x = jnp.where(accept, trial, st.x)
        f = jnp.where(accept, f_t, st.f)
        g = jnp.where(accept, g_t, st.g)

        # Rejected 10 times in a row: forget the curvature pairs, restart along -g.
        rejects = jnp.where(accept, 0, st.rejects + 1)
        reset = rejects % _RESET_AFTER == 0
        reset = ~accept & (rejects > 0) & reset
        stored = jnp.where(reset, 0, stored)
        head = jnp.where(reset, 0, head)

        quasi_newton = _two_loop(g, s_mem, y_mem, rho, stored, head, memory_size)
        descent = jnp.vdot(g, quasi_newton) < 0
        new_direction = jnp.where(descent & (stored > 0), quasi_newton, -g)
        new_step = jnp.where(descent & (stored > 0), 1.0, _first_step(g)).astype(dtype)
        if max_move is not None:
            largest = jnp.max(jnp.abs(new_direction)) * new_step
            new_step = new_step * jnp.minimum(1.0, max_move / jnp.maximum(largest, 1e-30))

        # Rejected: shrink the step by quadratic interpolation, within [0.01 t, 0.5 t].
        curvature = f_t - st.f - slope * st.step
        quadratic = -slope * st.step**2 / jnp.maximum(2.0 * curvature, 1e-30)
        shrunk = jnp.where(
            jnp.isfinite(f_t) & (curvature > 0),
            jnp.clip(quadratic, 0.01 * st.step, 0.5 * st.step),
            0.1 * st.step,
        ).astype(dtype)

        take_new = accept | reset
        direction = jnp.where(take_new, new_direction, st.direction)
        step = jnp.where(take_new, new_step, shrunk)

        better = accept & (f < st.best_f)
        progress = better & (f < st.best_f * (1.0 - _PROGRESS))
        stalled = jnp.where(progress, 0, jnp.where(accept, st.stalled + 1, st.stalled))
        return _State(
            i=st.i + 1,
            x=x,
            f=f,
            g=g,
            direction=direction,
            step=step,
            s=s_mem,
            y=y_mem,
            rho=rho,
            stored=stored,
            head=head,
            best_x=jnp.where(better, x, st.best_x),
            best_f=jnp.where(better, f, st.best_f),
            stalled=stalled,
            rejects=rejects,
        )

    final = jax.lax.while_loop(cond, body, state)
    return LbfgsResult(final.best_x.reshape(shape), final.best_f, final.i)


def minimize_optax_lbfgs(
    fun: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    steps: int,
    memory_size: int = 10,
    tol: float | jax.Array = 0.0,
    patience: int = 10,
    max_linesearch_steps: int = 20,
) -> LbfgsResult:
    """Minimises ``fun`` from ``x0`` with ``optax.lbfgs`` and its zoom line search.

    Stops after ``steps`` iterations (each a line search of up to ``max_linesearch_steps``
    evaluations), once the objective is ``<= tol``, or after ``patience`` iterations without a
    relative ``1e-6`` decrease. Arguments and result as :func:`minimize_lbfgs`.

    Raises:
      ValueError: a count option is not a positive int.
    """
    _check_positive(
        steps=steps,
        memory_size=memory_size,
        patience=patience,
        max_linesearch_steps=max_linesearch_steps,
    )
    linesearch = optax.scale_by_zoom_linesearch(
        max_linesearch_steps=max_linesearch_steps, initial_guess_strategy="one"
    )
    solver = optax.lbfgs(memory_size=memory_size, linesearch=linesearch)
    value_and_grad = optax.value_and_grad_from_state(fun)
    x0 = jnp.asarray(x0)
    state0 = solver.init(x0)
    value0 = jnp.asarray(fun(x0), jnp.float32)

    def cond(carry):
        i, _, _, _, best_value, stalled = carry
        return (i < steps) & (best_value > tol) & (stalled < patience)

    def body(carry):
        i, x, state, best_x, best_value, stalled = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = solver.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        x = optax.apply_updates(x, updates)
        new_value = jnp.asarray(optax.tree_utils.tree_get(state, "value"), jnp.float32)
        better = new_value < best_value
        progress = new_value < best_value * (1.0 - _PROGRESS)
        best_x = jnp.where(better, x, best_x)
        best_value = jnp.where(better, new_value, best_value)
        stalled = jnp.where(progress, 0, stalled + 1)
        return i + 1, x, state, best_x, best_value, stalled

    carry = (jnp.zeros((), jnp.int32), x0, state0, x0, value0, jnp.zeros((), jnp.int32))
    i, _, _, best_x, best_value, _ = jax.lax.while_loop(cond, body, carry)
    return LbfgsResult(best_x, best_value, i)
