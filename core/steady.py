"""The steady state of a composed model at the patient's inputs at rest.

Each organ's `Organ.initial_state` is its own steady state at the defaults of its
inputs. Once organs are coupled (one organ's balance sets the quantity another one
reads...) and once a patient's parameters differ from the nominal ones, that point
is no longer an equilibrium of the whole. `settle` finds the root of the composed
vector field at constant inputs at rest (no events; levels at their defaults) by
*pseudo-transient continuation* (Kelley & Keyes, SIAM J Numer Anal 35:508, 1998):
implicit-Euler steps of the dynamics themselves,

    (I / dt_k - J(y_k)) d = f(y_k),    y_{k+1} = y_k + d,

with a pseudo-time step ``dt`` that starts at 0.1 minute and doubles at every step, so
the first steps follow the physiology towards its stable rest, wherever the organs'
own equilibria start it, and the last ones (``dt`` far beyond the slowest time
constant) are Newton steps. (Growing ``dt`` with the fall of the residual, the usual
rule, stalls on the slow modes of a kidney's sodium balance; rejecting steps that raise
the residual stalls on the transients of fast reflexes.) A fixed number of
iterations (no while loop: cheap under vmap, where a loop would run until the
slowest patient converged). The implicit-function-theorem derivative is attached:
gradients with respect to parameters stay exact and cheap.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .composer import Model

__all__ = ["settle", "Settled"]

_SHIFT = 1e-12  # diagonal shift of the Jacobian (zero rows of bookkeeping states)
DT0 = 0.1  # min, first pseudo-time step
DT_MAX = 1e12  # min: beyond this the step is Newton's
TOL = 1e-6  # at rest every state moves by less than TOL of its size per day
STOP = 1e-3 * TOL  # the continuation stops there (Newton converges fast: a step or two past TOL)


class _ConstantInputs(eqx.Module):
    model: Model

    def __call__(self, y, args):
        theta, signals = args
        return self.model.evaluate(0.0, y, theta, signals)[0]


class Settled(eqx.Module):
    """The result of `settle`: the state, whether it is at rest, and the state that moves
    most (index into ``model.state_names``) with its relative rate per day."""

    y: Float[Array, " state"]
    ok: Array
    worst: Array
    rate: Array


def _size(fy, y, scale):
    return jnp.sqrt(jnp.mean((fy / (jnp.abs(y) + scale)) ** 2))


# continuation schedules tried one after the other until one reaches rest: growth of dt per
# step, and how much a step may raise the residual (implicit-Euler steps with a long dt are
# Newton steps, which can jump far on a stiff, nonlinear model: a second schedule, slower,
# and a third, more cautious, catch most of what the first misses)
SCHEDULES = ((2.0, math.inf), (1.5, math.inf), (2.0, 100.0))


def solve(a: Float[Array, "n n"], b: Float[Array, " n"]) -> Float[Array, " n"]:
    """``a^-1 b`` by Gaussian elimination with partial pivoting, in plain JAX operations.

    Not `jnp.linalg.solve`: on CPU that is a LAPACK call, and two CPU devices running LAPACK
    calls at once (the patients of a cohort split over the cores) stall each other for good;
    these matrices are small (one row per state), so the loop costs about the same."""
    n = a.shape[0]
    rows = jnp.arange(n)

    def eliminate(k, ab):
        p = jnp.argmax(jnp.where(rows >= k, jnp.abs(ab[:, k]), -1.0))
        ab = ab.at[k].set(ab[p]).at[p].set(ab[k])
        factor = jnp.where(rows > k, ab[:, k] / ab[k, k], 0.0)
        return ab - factor[:, None] * ab[k][None, :]

    ab = jax.lax.fori_loop(0, n, eliminate, jnp.concatenate([a, b[:, None]], axis=1))
    u, c = ab[:, :n], ab[:, n]

    def substitute(i, x):
        k = n - 1 - i
        return x.at[k].set((c[k] - u[k] @ x) / u[k, k])

    return jax.lax.fori_loop(0, n, substitute, jnp.zeros_like(c))


def _rest_rate(f, y):
    return jnp.max(jnp.abs(f(y)) * 1440.0 / (jnp.abs(y) + 1.0))


def _continuation(f, y0, scale, nonneg, steps: int):
    """Pseudo-transient continuation from ``y0``: implicit-Euler steps whose length ``dt`` grows
    geometrically (from ``DT0``), so the first steps follow the fast dynamics and the last
    ones, with ``dt`` far beyond the slowest time constant, are Newton steps. A step that is
    not finite (or raises the residual more than the schedule allows) is rejected and ``dt``
    shrinks fourfold. Each schedule of `SCHEDULES` runs ``steps`` steps from ``y0`` until one
    ends at rest; one loop for all of them (traced once)."""
    eye = jnp.eye(y0.shape[0], dtype=y0.dtype)
    growth = jnp.asarray([g for g, _ in SCHEDULES], y0.dtype)
    blow = jnp.asarray([b for _, b in SCHEDULES], y0.dtype)
    size0 = _size(f(y0), y0, scale)

    def step(i, carry):
        y, dt, size, done = carry
        phase, first = i // steps, (i % steps == 0) & (i > 0)
        done = done | (first & (_rest_rate(f, y) < TOL)) | (_rest_rate(f, y) < STOP)
        y, dt, size = (jnp.where(first & ~done, y0, y), jnp.where(first & ~done, DT0, dt),
                       jnp.where(first & ~done, size0, size))
        cand = y + solve(eye / dt - jax.jacfwd(f)(y) + _SHIFT * eye, f(y))
        cand = jnp.where(nonneg & (cand < 0.0), jnp.where(y > 0.0, 0.5 * y, 0.0), cand)  # halve towards a bound
        size_c = _size(f(cand), cand, scale)
        ok = jnp.all(jnp.isfinite(cand)) & jnp.isfinite(size_c) & (size_c < blow[phase] * size) & ~done
        return (jnp.where(ok, cand, y), jnp.clip(jnp.where(ok, growth[phase] * dt, 0.25 * dt), 1e-4 * DT0, DT_MAX),
                jnp.where(ok, size_c, size), done)

    # a while loop: it ends once every patient of a batch is at rest (under vmap it runs until the
    # last one is), usually within the first schedule, instead of always running all of them
    def go(c):
        i, (_, _, _, done) = c
        return (i < steps * len(SCHEDULES)) & ~done

    _, (y, _, _, _) = jax.lax.while_loop(go, lambda c: (c[0] + 1, step(c[0], c[1])),
                                         (0, (y0, jnp.asarray(DT0, y0.dtype), size0, jnp.asarray(False))))
    return y


def settle(model: Model, theta: Float[Array, " param"], rest_signals: Float[Array, " signal"],
           y0: Float[Array, " state"], *, steps: int = 60) -> Settled:
    """The steady state of ``model`` at ``rest_signals``, from ``y0`` (the organs' own initial
    states). ``ok`` is False when it did not converge (the caller flags the patient)."""
    field = _ConstantInputs(model)
    args = (theta, rest_signals)
    fixed = jax.lax.stop_gradient(args)
    scale = jnp.asarray(model.state_scales, dtype=y0.dtype)
    nonneg = jnp.asarray([s.nonnegative for o in model.organs for s in o.states])
    root = _continuation(lambda y: field(y, fixed), jax.lax.stop_gradient(y0), scale, nonneg, steps)
    # a state that is zero at rest may land a hair below zero, where models that freeze
    # negative states lose that equation: put non-negative states back on their bound
    root = jnp.where(nonneg & (root < 0.0) & (root > -1e-9), 0.0, root)
    # implicit function theorem through one Newton step: the value stays `root` (f = 0
    # there) and the derivative is -J^-1 df/dtheta (bookkeeping states: zero rows, shifted)
    jac = jax.lax.stop_gradient(jax.jacfwd(lambda y: field(y, fixed))(root))
    step = solve(jac - _SHIFT * jnp.eye(jac.shape[0], dtype=jac.dtype), field(root, args))
    step = jnp.where(jnp.isfinite(step), step, 0.0)  # (a singular Jacobian: no derivative, never a NaN)
    y = root - (step - jax.lax.stop_gradient(step))  # value exactly `root`
    rate = jnp.abs(field(root, fixed)) * 1440.0 / (jnp.abs(root) + 1.0)
    rate = jnp.where(jnp.isfinite(rate), rate, jnp.inf)
    worst = jnp.argmax(rate)
    return Settled(y, jnp.all(jnp.isfinite(root)) & (rate[worst] < TOL), worst, rate[worst])
