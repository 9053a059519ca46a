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
dynamics make the Jacobian singular, so linear solves are least squares.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import jax
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Float

from .composer import Model

__all__ = ["settle"]


class _ConstantInputs(eqx.Module):
    model: Model

    def __call__(self, t, y, args):
        theta, signals = args
        return self.model.evaluate(t, y, theta, signals)[0]


def settle(
    model: Model,
    theta: Float[Array, " param"],
    basal_signals: Float[Array, " signal"],
    y0: Float[Array, " state"],
    *,
    tol: float = 1e-6,
    max_steps: int = 64,
) -> tuple[Float[Array, " state"], Array]:
    """Return ``(steady state, ok)``, starting Newton's method from ``y0`` (the organs'
    own initial states: each organ's equilibrium at its default inputs, so near the
    composed one). ``ok`` is False when Newton did not converge (the caller flags
    the patient)."""
    field = _ConstantInputs(model)
    args = (theta, basal_signals)
    guess = jax.lax.stop_gradient(y0)
    fixed = jax.lax.stop_gradient(args)
    least_squares = lx.AutoLinearSolver(well_posed=False)
    root = optx.root_find(
        lambda y, a: field(0.0, y, a),
        optx.Newton(rtol=1e-12, atol=1e-12, linear_solver=least_squares),
        guess,
        fixed,
        max_steps=max_steps,
        throw=False,
    ).value
    # Newton may land a state that is zero at rest (e.g. subcutaneous insulin without a
    # pump) a hair below zero, where models that freeze negative states lose that
    # equation: put non-negative states back on their bound
    nonnegative = jnp.asarray([s.nonnegative for o in model.organs for s in o.states])
    root = jnp.where(nonnegative & (root < 0.0) & (root > -1e-9), 0.0, root)
    # implicit function theorem through one Newton step: the value stays `root` (f = 0
    # there) and the derivative is -J^+ df/dtheta (least squares: bookkeeping states
    # without dynamics make J singular)
    jac = jax.lax.stop_gradient(jax.jacfwd(lambda y: field(0.0, y, fixed))(root))
    step = lx.linear_solve(lx.MatrixLinearOperator(jac), field(0.0, root, args), least_squares).value
    y = root - (step - jax.lax.stop_gradient(step))  # value exactly `root`
    # at rest every state moves by less than tol of its size per day
    residual = jnp.max(jnp.abs(field(0.0, root, fixed)) * 1440.0 / (jnp.abs(root) + 1.0))
    ok = jnp.isfinite(residual) & (residual < tol)
    return y, ok
