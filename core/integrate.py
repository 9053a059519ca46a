"""One integration interface for every job: simulate, calibrate, filter, forecast.

Like diffrax's ``diffeqsolve``, `integrate` takes the problem (a vector field, a
start, piecewise-constant `physiotwin.inputs.Inputs`) and *strategy objects* that
say how to solve it:

- step control: `Adaptive` (a diffrax solver with PID step-size control that stops at
  every input breakpoint and at every organ reset) or `FixedSteps` (a fixed number of
  explicit steps per input piece: a loop whose length does not depend on the
  parameters, cheap to differentiate and to vmap over windows, starts and forecast
  origins);
- batching (adaptive only): `SharedSteps` (a batch of patients as one ODE with one
  step size, set by the worst patient) or `PerPatient` (each patient its own steps).

The vector field is an `AbstractField`: ``field(t, y, u)`` gives ``dy/dt``,
``field.reset(t, y, u, mask)`` the organ resets and ``field.outputs(t, y, u)`` the
model outputs. `ModelField` is a composed model with one parameter vector; the
calibration's hybrid field adds neural terms.

`FixedSteps.transition` is the linearisation of one piece of the very same scheme,
which is what a state filter propagates its covariance with.
"""

from __future__ import annotations

import abc
import math
from typing import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, Float

from .composer import Model
from .inputs import Inputs, lookup

__all__ = ["AbstractField", "ModelField", "AbstractStepping", "FixedSteps", "Adaptive", "SharedSteps", "PerPatient",
           "integrate", "integrate_batch", "result_code", "max_step"]


class AbstractField(eqx.Module):
    """A vector field over a flat state, driven by piecewise-constant inputs."""

    model: eqx.AbstractVar[Model]

    @abc.abstractmethod
    def __call__(self, t: Array, y: Float[Array, " state"], u: Float[Array, " signal"]) -> Float[Array, " state"]:
        """``dy/dt`` at time ``t`` with inputs ``u``."""

    @abc.abstractmethod
    def outputs(self, t: Array, y: Float[Array, " state"], u: Float[Array, " signal"]) -> Float[Array, " output"]:
        """The model outputs (order ``model.output_names``)."""

    @abc.abstractmethod
    def reset(self, t: Array, y: Float[Array, " state"], u: Float[Array, " signal"], mask: Array
              ) -> Float[Array, " state"]:
        """The state right after the resets of the organs in ``mask`` at ``t``."""


class ModelField(AbstractField):
    """A composed model with one parameter vector."""

    model: Model
    theta: Float[Array, " param"]

    def __call__(self, t, y, u):
        return self.model.evaluate(t, y, self.theta, u)[0]

    def outputs(self, t, y, u):
        return self.model.evaluate(t, y, self.theta, u)[1]

    def reset(self, t, y, u, mask):
        return self.model.reset(t, y, self.theta, u, mask) if any(self.model.reset_columns) else y


# ------------------------------------------------------------------ step control
class AbstractStepping(eqx.Module):
    """How to step through time (see `FixedSteps`, `Adaptive`)."""


class FixedSteps(AbstractStepping):
    """``substeps`` equal steps of an explicit Runge-Kutta ``solver`` (a diffrax solver with a
    Butcher tableau; default Ralston's 2nd-order method) over every input piece of length
    ``piece`` minutes (pieces start at ``t0 + k piece``).

    The stages are written out from the solver's tableau (no inner loop), so the steps
    can be differentiated in forward as well as reverse mode."""

    substeps: int = eqx.field(static=True)
    solver: diffrax.AbstractSolver = eqx.field(static=True, default_factory=diffrax.Ralston)
    piece: float = eqx.field(static=True, default=1.0)
    checkpoint: bool = eqx.field(static=True, default=False)
    #: write the stages and steps out (no inner loops): about 3x faster to run, for the
    #: forward-only cohort path; the loops (default) keep derivatives quick to compile
    unroll: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if getattr(self.solver, "tableau", None) is None or isinstance(self.solver, diffrax.AbstractImplicitSolver):
            raise ValueError(f"FixedSteps needs an explicit Runge-Kutta solver, not {type(self.solver).__name__}")

    def _rk(self, f, t, y, h):
        """One step of the tableau's method for ``dy/dt = f(t, y)``: the stages in a loop, so
        the vector field is traced (and differentiated) once, however many stages and steps,
        and each stage rematerialised in the reverse pass instead of storing its
        intermediates (unrolled, the derivative of a coupled model took minutes to compile;
        the loop and the rematerialisation bring it to seconds)."""
        tab = self.solver.tableau
        n = len(tab.b_sol)
        a = np.zeros((n, n))
        for i, row in enumerate(tab.a_lower):
            a[i + 1, :len(row)] = row
        c = np.concatenate([[0.0], np.asarray(tab.c, float)])
        b = np.asarray(tab.b_sol, float)
        if self.unroll:
            ks = []
            for i in range(n):
                yi = y + h * sum((a[i, j] * ks[j] for j in range(i) if a[i, j] != 0.0), jnp.zeros_like(y))
                ks.append(f(t + c[i] * h, yi))
            return y + h * sum((b[i] * ks[i] for i in range(n) if b[i] != 0.0), jnp.zeros_like(y))
        c = jnp.asarray(c, y.dtype)
        a, b = jnp.asarray(a, y.dtype), jnp.asarray(b, y.dtype)

        def stage(i, ks):
            yi = y + h * jnp.tensordot(a[i], ks, axes=1)
            return ks.at[i].set(f(t + c[i] * h, yi))

        ks = jax.lax.fori_loop(0, n, jax.checkpoint(stage), jnp.zeros((n,) + y.shape, y.dtype))
        return y + h * jnp.tensordot(b, ks, axes=1)

    def _steps(self, f, t, y):
        h = self.piece / self.substeps
        if self.unroll:
            for j in range(self.substeps):
                y = self._rk(f, t + j * h, y, h)
            return y
        return jax.lax.fori_loop(0, self.substeps, lambda j, yy: self._rk(f, t + j * h, yy, h), y)

    def step(self, field: AbstractField, t: Array, y: Array, u: Array) -> Array:
        """Integrate over ``[t, t + piece]``, ``u`` held constant."""
        return self._steps(lambda tt, yy: field(tt, yy, u), t, y)

    def transition(self, jac: Float[Array, "state state"]) -> Float[Array, "state state"]:
        """The linearised map of one piece for ``dy/dt = J y``: the same steps applied to the
        identity matrix (for an explicit Runge-Kutta method, its stability polynomial)."""
        eye = jnp.eye(jac.shape[0], dtype=jac.dtype)
        return self._steps(lambda tt, yy: jac @ yy, jnp.zeros((), jac.dtype), eye)

    def run(self, field: AbstractField, y0: Array, inputs: Inputs, t0: Array,
            observe: Callable[[Array, Array, Array], Array]):
        """Step through every piece (reset first, then the steps); ``observe(t, y, u)`` at the
        END of each piece. Returns ``(y_end, observed[piece, ...])``."""

        def body(y, k):
            t = t0 + k * self.piece
            u = inputs.values[k]
            y = field.reset(t, y, u, inputs.resets[k])
            y = self.step(field, t, y, u)
            return y, observe(t + self.piece, y, u)

        if self.checkpoint:
            body = jax.checkpoint(body)
        return jax.lax.scan(body, y0, jnp.arange(inputs.values.shape[0]))


MIN_SUBSTEPS = 2  # Ralston steps per minute, at least


def minute_steps(model) -> FixedSteps:
    """The fixed-step scheme of minute-by-minute runs (calibration, forecasts, replays,
    closed loops): Ralston's 2nd-order method, at least two steps a minute and more where
    an organ's `Organ.max_step` asks for it (on the UVA/Padova model it matches the
    adaptive Tsit5 solution to about 0.02 mg/dL)."""
    cap = min([o.max_step for o in model.organs] + [1.0])
    return FixedSteps(max(MIN_SUBSTEPS, int(np.ceil(1.0 / cap - 1e-9))), checkpoint=len(model.organs) > 1)


def _worst_patient_norm(x: Float[Array, "state patient"]):
    """Error norm of a batch: the largest per-patient RMS norm. Patients whose error is
    NaN (their state blew up) are left out, so they do not stall the others; +inf is
    kept, since implicit solvers report a diverged Newton iteration that way and the
    step must be rejected. Step-size decisions are constants for the derivative."""
    r = jax.vmap(optx.rms_norm, in_axes=1)(jax.lax.stop_gradient(x))
    return jnp.max(jnp.where(jnp.isnan(r), 0.0, r))


class Adaptive(AbstractStepping):
    """A diffrax solver with PID step-size control; it stops at every input breakpoint
    (``jump_ts``) and at every organ reset (the integration is split there).

    ``atol`` is multiplied per state by ``scales`` (typical sizes); ``dtmax`` caps the
    step (see `max_step`); ``max_steps`` bounds each segment's budget."""

    solver: diffrax.AbstractSolver = eqx.field(static=True)
    rtol: Array
    atol: Array
    scales: tuple[float, ...] = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    dtmax: float | None = eqx.field(static=True, default=None)
    adjoint: diffrax.AbstractAdjoint = eqx.field(static=True, default_factory=diffrax.RecursiveCheckpointAdjoint)

    @property
    def implicit(self) -> bool:
        return isinstance(self.solver, diffrax.AbstractImplicitSolver)

    def controller(self, times, b, norm):
        pid = diffrax.PIDController(rtol=self.rtol, atol=self.atol * self._scales(norm), norm=norm,
                                    dtmax=self.dtmax)
        return diffrax.ClipStepSizeController(pid, jump_ts=jnp.where(times[1:] < b, times[1:], jnp.inf))

    def _scales(self, norm):
        s = jnp.asarray(self.scales)
        return s[:, None] if norm is _worst_patient_norm else s

    def run(self, term, y0, inputs: Inputs, save_ts, reset, norm=optx.rms_norm):
        """Solve segment by segment (split at the resets), saving at ``save_ts``.
        ``reset(a, y, mask)`` maps the state across a reset. Returns ``(ys[T, ...],
        result code, steps)``."""
        t0, t1 = save_ts[0], save_ts[-1]
        rt = inputs.reset_times
        bounds = jnp.concatenate([t0[None], jnp.clip(rt, t0, t1), t1[None]])
        real = jnp.concatenate([jnp.array([False]), rt < t1])
        # each output time comes from the segment that contains it (right-continuous at resets)
        which = jnp.sum(save_ts[:, None] >= jnp.where(rt < t1, rt, jnp.inf)[None, :], axis=1)

        def segment(carry, j):
            y, ys, result, steps = carry
            a, b = bounds[j], bounds[j + 1]
            if rt.shape[0]:  # (static) no organ resets: a single segment
                y = jnp.where(real[j], reset(a, y, inputs.reset_masks[jnp.maximum(j - 1, 0)]), y)
            sol = diffrax.diffeqsolve(
                term, self.solver, t0=a, t1=b, dt0=jnp.minimum(1.0, jnp.maximum(b - a, 1e-9)), y0=y,
                args=(inputs.times, inputs.values, jnp.nextafter(b, -jnp.inf)),
                saveat=diffrax.SaveAt(ts=jnp.clip(save_ts, a, b)), stepsize_controller=self.controller(
                    inputs.times, b, norm), adjoint=self.adjoint, max_steps=self.max_steps, throw=False)
            ys = jnp.where((which == j).reshape((-1,) + (1,) * (ys.ndim - 1)), sol.ys, ys)
            result = jnp.where(result == 0, result_code(sol.result), result)
            return (sol.ys[-1], ys, result, steps + sol.stats["num_steps"]), None

        carry = (y0, jnp.zeros(save_ts.shape + y0.shape, y0.dtype), jnp.array(0), jnp.array(0))
        (_, ys, result, steps), _ = jax.lax.scan(segment, carry, jnp.arange(rt.shape[0] + 1))
        return ys, result, steps


def result_code(result):
    """diffrax result -> 0 success, 1 max_steps_reached, 2 other solver failure."""
    return jnp.where(result == diffrax.RESULTS.successful, 0,
                     jnp.where(result == diffrax.RESULTS.max_steps_reached, 1, 2))


def max_step(model: Model, solver) -> float | None:
    """Largest step an explicit solver may take: the smallest `Organ.max_step` of the
    composition (fast modes that sit at rest would otherwise let the step grow past
    the stability limit: the trajectory stays right but its derivative diverges)."""
    if isinstance(solver, diffrax.AbstractImplicitSolver):
        return None
    limit = min((o.max_step for o in model.organs), default=math.inf)
    return None if math.isinf(limit) else limit


class _HeldInputs(eqx.Module):
    """Timeline inputs looked up at ``min(t, t_hold)``: ``t_hold`` is the float just before the
    end of the current segment, so a stage evaluated exactly at a reset time still sees the
    old input (otherwise the controller creeps up to it)."""

    field: AbstractField

    def __call__(self, t, y, args):
        times, values, t_hold = args
        return self.field(t, y, lookup(jnp.minimum(t, t_hold), times, values))


def integrate(field: AbstractField, y0: Array, inputs: Inputs, stepping: AbstractStepping, *,
              save_ts: Array | None = None, t0: Array | None = None,
              observe: Callable[[Array, Array, Array], Array] | None = None):
    """Integrate ``field`` from ``y0`` through ``inputs``.

    - `FixedSteps`: from ``t0`` through every piece; returns ``(y_end, observed[piece, ...])``
      with ``observe(t, y, u)`` evaluated at the end of each piece.
    - `Adaptive`: from ``save_ts[0]`` to ``save_ts[-1]``; returns ``(ys[T, state], result
      code, steps)``.
    """
    if isinstance(stepping, FixedSteps):
        return stepping.run(field, y0, inputs, jnp.asarray(0.0) if t0 is None else t0, observe)
    if isinstance(stepping, Adaptive):

        def reset(a, y, mask):
            return field.reset(a, y, inputs.at(a), mask)

        return stepping.run(diffrax.ODETerm(_HeldInputs(field)), y0, inputs, save_ts, reset)
    raise TypeError(f"unknown step control {stepping!r}")


# ------------------------------------------------------------------ batching
class AbstractBatching(eqx.Module):
    """How a batch of patients is solved adaptively (see `SharedSteps`, `PerPatient`)."""


class SharedSteps(AbstractBatching):
    """The whole batch as one ODE, states ``[state, patient]``, one step size set by the
    worst patient (no masking of finished patients; whole-batch operations)."""


class PerPatient(AbstractBatching):
    """Each patient with its own step sizes (a vmap of one-patient solves): needed by
    implicit solvers, whose Newton iterations would otherwise see one Jacobian for the
    whole batch, and the fallback that isolates a failing patient."""


class _BatchField(eqx.Module):
    model: Model
    theta: Array  # [P, Q]

    def __call__(self, t, y, args):
        times, values, t_hold = args
        u = lookup(jnp.minimum(t, t_hold), times, values)
        return jax.vmap(lambda yi, th: self.model.evaluate(t, yi, th, u)[0], in_axes=(1, 0), out_axes=1)(y, self.theta)


def integrate_batch(model: Model, theta: Array, y0: Array, inputs: Inputs, stepping: Adaptive,
                    batching: AbstractBatching, save_ts: Array):
    """Adaptive solves of a batch of patients (``theta[P, Q]``, ``y0[P, S]``). Returns
    ``(ys[P, T, S], result[P], steps[P])``."""
    if isinstance(batching, PerPatient):  # each patient a batch of one
        out = jax.vmap(lambda th, y: integrate_batch(model, th[None], y[None], inputs, stepping, SharedSteps(),
                                                     save_ts))(theta, y0)
        return jax.tree.map(lambda a: a[:, 0], out)
    if not isinstance(batching, SharedSteps):
        raise TypeError(f"unknown batching {batching!r}")

    def reset(a, y, mask):
        u = inputs.at(a)
        return jax.vmap(lambda yi, th: model.reset(a, yi, th, u, mask), in_axes=(1, 0), out_axes=1)(y, theta)

    ys, result, steps = stepping.run(diffrax.ODETerm(_BatchField(model, theta)), y0.T, inputs, save_ts, reset,
                                     norm=_worst_patient_norm)
    n = theta.shape[0]
    return jnp.transpose(ys, (2, 0, 1)), jnp.broadcast_to(result, (n,)), jnp.broadcast_to(steps, (n,))
