"""The steady state of a composed model at the patient's basal inputs.

Each organ's `Organ.initial_state` is its own steady state at the defaults of its
inputs. Once organs are coupled (the kidney's sodium balance sets the blood
volume that sets the pressure the kidney filters at...), and once a patient's
parameters differ from the nominal ones, that point is no longer an equilibrium of
the whole. `settle` integrates the composed model at constant basal inputs (no
meals, doses or bouts; levels at their defaults) with an L-stable implicit solver
until the vector field nearly vanishes, then polishes the root with Newton's
method (optimistix) and attaches the implicit-function-theorem derivative: gradients
with respect to parameters stay exact and cheap. Bookkeeping states with no
dynamics make the Jacobian singular, so linear solves are least squares.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
import jax
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Float

from .composer import Model

__all__ = ["settle", "SETTLE_HORIZON"]

SETTLE_HORIZON = 120.0 * 1440.0  # min: far beyond the slowest time constant (renal sodium balance: days)


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
    rtol: float = 1e-8,
    atol: float = 1e-8,
    max_steps: int = 2048,
) -> tuple[Float[Array, " state"], Array]:
    """Return ``(steady state, ok)``; ``ok`` is False when no steady state was reached
    within `SETTLE_HORIZON` or ``max_steps`` (the caller flags the patient)."""
    field = _ConstantInputs(model)
    args = (theta, basal_signals)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Kvaerno5(),
        t0=0.0,
        t1=SETTLE_HORIZON,
        dt0=1.0,
        y0=y0,
        args=jax.lax.stop_gradient(args),  # only a starting point for Newton: no gradient needed
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        event=diffrax.Event(diffrax.steady_state_event(rtol=rtol, atol=atol)),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
        throw=False,
    )
    guess = jax.lax.stop_gradient(sol.ys[-1])
    fixed = jax.lax.stop_gradient(args)
    least_squares = lx.AutoLinearSolver(well_posed=False)
    root = optx.root_find(
        lambda y, a: field(0.0, y, a),
        optx.Newton(rtol=1e-12, atol=1e-12, linear_solver=least_squares),
        guess,
        fixed,
        max_steps=16,
        throw=False,
    ).value
    # Newton may land a state that is zero at rest (e.g. subcutaneous insulin without a
    # pump) a hair below zero, where models that freeze negative states lose that
    # equation: put non-negative states back on their bound
    nonnegative = jnp.asarray([s.nonnegative for o in model.organs for s in o.states])
    root = jnp.where(nonnegative, jnp.maximum(root, 0.0), root)
    # implicit function theorem through one Newton step: the value stays `root` (f = 0
    # there) and the derivative is -J^+ df/dtheta (least squares: bookkeeping states
    # without dynamics make J singular)
    jac = jax.lax.stop_gradient(jax.jacfwd(lambda y: field(0.0, y, fixed))(root))
    step = lx.linear_solve(lx.MatrixLinearOperator(jac), field(0.0, root, args), least_squares).value
    y = root - (step - jax.lax.stop_gradient(step))  # value exactly `root`
    residual = jnp.max(jnp.abs(field(0.0, root, fixed)))
    ok = (sol.result == diffrax.RESULTS.event_occurred) & jnp.isfinite(residual) & (residual < 1e-6)
    return y, ok
