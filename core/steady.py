"""The steady state of a composed model at the patient's basal inputs.

Each organ's `Organ.initial_state` is its own steady state at the defaults of its
inputs. Once organs are coupled (the kidney's sodium balance sets the blood
volume that sets the pressure the kidney filters at...), and once a patient's
parameters differ from the nominal ones, that point is no longer an equilibrium of
the whole. `settle` solves for the root of the composed vector field at constant
basal inputs (no meals, doses or bouts; levels at their defaults) with Newton's
method (optimistix), starting from the organs' own equilibria, and attaches the
implicit-function-theorem derivative: gradients with respect to parameters stay
exact and cheap. Bookkeeping states with no
dynamics make the Jacobian singular: a tiny diagonal shift keeps the solves defined.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax
from jaxtyping import Array, Float

from .composer import Model

__all__ = ["settle"]


class _ConstantInputs(eqx.Module):
    model: Model

    def __call__(self, t, y, args):
        theta, signals = args
        return self.model.evaluate(t, y, theta, signals)[0]


_SHIFT = 1e-12  # diagonal shift of the Jacobian (zero rows of bookkeeping states)


def _newton(f, y, steps: int):
    """A fixed number of Newton steps (no while loop: cheap under vmap, where a loop
    would run until the slowest patient converged). A tiny diagonal shift keeps the
    LU factorisation defined for bookkeeping states with no dynamics (zero rows),
    whose update is then zero."""
    shift = _SHIFT * jnp.eye(y.shape[0], dtype=y.dtype)

    def step(_, y):
        jac = jax.jacfwd(f)(y)
        return y - jnp.linalg.solve(jac - shift, f(y))

    return jax.lax.fori_loop(0, steps, step, y)


def settle(
    model: Model,
    theta: Float[Array, " param"],
    basal_signals: Float[Array, " signal"],
    y0: Float[Array, " state"],
    *,
    tol: float = 1e-6,
    max_steps: int = 8,
) -> tuple[Float[Array, " state"], Array]:
    """Return ``(steady state, ok)``, starting Newton's method from ``y0`` (the organs'
    own initial states: each organ's equilibrium at its default inputs, so near the
    composed one). ``ok`` is False when Newton did not converge (the caller flags
    the patient)."""
    field = _ConstantInputs(model)
    args = (theta, basal_signals)
    guess = jax.lax.stop_gradient(y0)
    fixed = jax.lax.stop_gradient(args)
    root = _newton(lambda y: field(0.0, y, fixed), guess, max_steps)
    # Newton may land a state that is zero at rest (e.g. subcutaneous insulin without a
    # pump) a hair below zero, where models that freeze negative states lose that
    # equation: put non-negative states back on their bound
    nonnegative = jnp.asarray([s.nonnegative for o in model.organs for s in o.states])
    root = jnp.where(nonnegative & (root < 0.0) & (root > -1e-9), 0.0, root)
    # implicit function theorem through one Newton step: the value stays `root` (f = 0
    # there) and the derivative is -J^-1 df/dtheta (J shifted as in `_newton`: the
    # bookkeeping states' rows are zero, and so is their df/dtheta)
    jac = jax.lax.stop_gradient(jax.jacfwd(lambda y: field(0.0, y, fixed))(root))
    step = jnp.linalg.solve(jac - _SHIFT * jnp.eye(jac.shape[0], dtype=jac.dtype), field(0.0, root, args))
    y = root - (step - jax.lax.stop_gradient(step))  # value exactly `root`
    # at rest every state moves by less than tol of its size per day
    residual = jnp.max(jnp.abs(field(0.0, root, fixed)) * 1440.0 / (jnp.abs(root) + 1.0))
    ok = jnp.isfinite(residual) & (residual < tol)
    return y, ok
