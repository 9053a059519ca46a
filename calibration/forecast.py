"""Forecasting from a twin: filter the state up to each origin, then simulate forward.

At a forecast origin ``o`` only the past is known: the readings up to ``o`` and the
logged inputs (meals, boluses, basal rates) with a time ``<= o``. The forecast

1. estimates the state at every minute with an **extended Kalman filter** run once
   over the whole record (causal: the estimate at ``o`` uses readings ``<= o`` only).
   The state is the model state plus, for an autocorrelated sensor, the sensor error
   (an AR(1) state), so the filter does not mistake slow sensor error for glucose.
   Process noise is diagonal, ``(q * typical state size)^2`` per minute; ``q`` is
   chosen at calibration on the fitted record (with the sensor-error SD and correlation,
   by the predictive likelihood of the readings). The transition Jacobian is a
   second-order expansion of the one-minute step from the vector field's Jacobian;
2. simulates every origin forward at once (`jax.vmap` over origins), with the inputs
   that were known at that origin: a meal logged before ``o`` keeps being eaten, a
   meal logged after ``o`` does not exist yet, and the basal rate stays as last set.
   The predicted reading adds the expected sensor error, which decays with the
   sensor's correlation.

One filter pass plus one batched simulation: a 3-day record at 5-minute origins takes
about a second after compilation.
"""

from __future__ import annotations

import math
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..composer import Model
from ..timeline import Timeline
from .data import readings_on_grid
from .fit import _field
from .grid import GridInputs, grid_inputs, minute_step
from .hybrid import Hybrid
from .observation import ObservationModel

__all__ = ["Filter", "filter_states", "forecast_paths", "known_inputs"]

P0_SCALE = 0.3  # initial state uncertainty, as a fraction of each state's typical size
READING_JITTER = 1.0  # mg/dL: measurement noise left once the AR(1) sensor error is a state


class Filter(eqx.Module):
    """Everything the filter and the forward simulation need, as one pytree."""

    model: Model = eqx.field(static=True)
    obs_model: ObservationModel = eqx.field(static=True)
    out_col: int = eqx.field(static=True)
    glucose_col: int = eqx.field(static=True)  # plasma glucose output, -1 if none
    n_sub: int = eqx.field(static=True)
    theta: jax.Array
    hybrid: Hybrid | None
    noise: dict
    scale: jax.Array  # typical state sizes
    nonneg: jax.Array
    day0: jax.Array

    def step(self, t, y, u, mask):
        f, reset = _field(self.model, self.theta, self.hybrid, self.day0)
        return minute_step(f, t, reset(t, y, u, mask), u, self.n_sub)

    def transition(self, t, y, u, mask):
        """Jacobian of the one-minute step, to second order: ``I + J + J^2/2`` with ``J`` the
        (forward-mode) Jacobian of the vector field after the reset. Far cheaper to trace,
        compile and run than differentiating the solver steps, and as accurate as the
        covariance needs (the fastest modes are ~0.5 /min)."""
        f, reset = _field(self.model, self.theta, self.hybrid, self.day0)
        R = jax.jacfwd(lambda yy: reset(t, yy, u, mask))(y)
        yr = reset(t, y, u, mask)
        J = jax.jacfwd(lambda yy: f(t, yy, u))(yr)
        return (jnp.eye(y.shape[0]) + J + 0.5 * J @ J) @ R

    def outputs(self, t, y, u):
        return self.model.evaluate(t, y, self.theta, u)[1]

    def rho1(self):
        """Sensor-error correlation over one minute (0 for white noise)."""
        if getattr(self.obs_model, "noise", None) != "ar1":
            return jnp.zeros(())
        return self.noise["phi"] ** (1.0 / 5.0)


def filter_states(flt: Filter, inputs: GridInputs, obs: jax.Array, y0: jax.Array, q: jax.Array):
    """Run the EKF over every minute. Returns the filtered (state, sensor error) at the END of
    each minute (after the reading stamped at that time, if any), and the negative log
    predictive likelihood of each reading (0 where none): ``(y[K,S], e[K], nll[K])``."""
    S = y0.shape[0]
    rho = flt.rho1()
    sigma = flt.noise["sigma"]
    q_state = (q * flt.scale) ** 2
    q_err = jnp.where(rho > 0, sigma ** 2 * (1.0 - rho ** 2), 0.0)
    r = jnp.where(rho > 0, READING_JITTER ** 2, sigma ** 2)

    def body(carry, k):
        y, e, P = carry
        t = k * 1.0
        u = inputs.values[k]
        mask = inputs.reset[k]
        F = flt.transition(t, y, u, mask)
        y = flt.step(t, y, u, mask)
        A = jnp.zeros((S + 1, S + 1)).at[:S, :S].set(F).at[S, S].set(rho)
        P = A @ P @ A.T + jnp.diag(jnp.concatenate([q_state, q_err[None]]))
        # update with the reading at the end of this minute
        h_y = jax.grad(lambda yy: flt.outputs(t + 1.0, yy, u)[flt.out_col])(y)
        H = jnp.concatenate([h_y, jnp.ones(1)])
        z = obs[k]
        present = jnp.isfinite(z)
        innov = jnp.where(present, z - flt.outputs(t + 1.0, y, u)[flt.out_col] - e, 0.0)
        s = H @ P @ H + r
        K = P @ H / s
        x = jnp.concatenate([y, e[None]]) + jnp.where(present, K * innov, 0.0)
        IKH = jnp.eye(S + 1) - jnp.outer(K, H)
        P_new = IKH @ P @ IKH.T + r * jnp.outer(K, K)  # Joseph form
        P = jnp.where(present, P_new, P)
        P = 0.5 * (P + P.T)
        y = jnp.where(flt.nonneg, jnp.maximum(x[:S], 0.0), x[:S])
        nll = jnp.where(present, 0.5 * (innov ** 2 / s + jnp.log(s)), 0.0)
        return (y, x[S], P), (y, x[S], nll)

    P0 = jnp.diag(jnp.concatenate([(P0_SCALE * flt.scale) ** 2, (sigma ** 2)[None]]))
    _, (ys, es, nll) = jax.lax.scan(body, (y0, jnp.zeros(()), P0), jnp.arange(inputs.values.shape[0]))
    return ys, es, nll


def forecast_paths(flt: Filter, y_origin, e_origin, inputs: GridInputs, t_origin):
    """Simulate every origin forward over its own known inputs (``inputs`` batched [O, H, ...]).

    Returns ``(reading[O, H], sensor[O, H], plasma_glucose[O, H])`` at minutes 1..H after each
    origin: the expected reading (sensor glucose plus the decaying sensor error), the
    noise-free sensor glucose, and plasma glucose."""
    rho = flt.rho1()

    def one(y0, e0, gi, t0):
        f, reset = _field(flt.model, flt.theta, flt.hybrid, flt.day0)

        def observe(t, y, u):
            outs = flt.outputs(t, y, u)
            g = outs[flt.glucose_col] if flt.glucose_col >= 0 else jnp.nan * outs[0]
            return jnp.stack([outs[flt.out_col], g])

        from .grid import integrate

        _, obs = integrate(f, reset, y0, gi, t0, flt.n_sub, observe)
        h = jnp.arange(1, gi.values.shape[0] + 1)
        return obs[:, 0] + e0 * rho ** h, obs[:, 0], obs[:, 1]

    return jax.vmap(one)(y_origin, e_origin, inputs, t_origin)


def known_inputs(model: Model, tl: Timeline, origins: np.ndarray, horizon: int, minutes: int) -> GridInputs:
    """Inputs over ``[o, o + horizon)`` as known at each origin ``o``: from the input events
    (non-observation kinds) with time ``<= o``. One compilation per distinct prefix."""
    if tl.kinds is None:
        from ..registry import timeline_kinds

        kinds = timeline_kinds()
    else:
        kinds = tl.kinds
    is_input = np.array([not getattr(kinds.get(k), "observation", False) for k in tl.kind], dtype=bool)
    inputs_idx = np.flatnonzero(is_input)
    times = tl.time[inputs_idx]
    count = np.searchsorted(times, origins, side="right")
    total = minutes + horizon
    cache: dict[int, GridInputs] = {}
    vals, resets, meals = [], [], []
    for c in np.unique(count):
        keep = np.zeros(len(tl), dtype=bool)
        keep[inputs_idx[:c]] = True
        sub = Timeline(tl.time[keep], tl.kind[keep], tl.value[keep], tl.duration[keep], tl.row[keep],
                       source=tl.source, start=tl.start, kinds=tl.kinds, row_label=tl.row_label)
        cache[int(c)] = jax.tree_util.tree_map(np.asarray, grid_inputs(model, sub, total))
    for o, c in zip(origins, count):
        g = cache[int(c)]
        vals.append(g.values[o:o + horizon])
        resets.append(g.reset[o:o + horizon])
        meals.append(g.meal[o:o + horizon])
    return GridInputs(jnp.asarray(np.stack(vals)), jnp.asarray(np.stack(resets)), jnp.asarray(np.stack(meals)))


def origins_of(minutes: int, every: int, start: int | None = None) -> np.ndarray:
    start = every if start is None else start
    return np.arange(start, minutes + 1, every, dtype=int)


def run_forecast(flt: Filter, tl: Timeline, kind: str, horizon: int, every: int, q: float,
                 y0: jax.Array, minutes: int | None = None, gi: GridInputs | None = None,
                 obs: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Filter the whole record and forecast ``horizon`` minutes from every ``every``-minute origin.

    Returns numpy arrays: ``origin[O]`` (min), ``reading[O, H]``, ``sensor[O, H]`` and
    ``plasma_glucose[O, H]`` (minute h after the origin at index h-1)."""
    if minutes is None:
        minutes = int(math.ceil(float(np.max(tl.time)) + 1e-9))
    gi = grid_inputs(flt.model, tl, minutes) if gi is None else gi
    obs = readings_on_grid(tl, kind, minutes) if obs is None else obs
    ys, es, _ = _filter_jit(flt, gi, jnp.asarray(obs), y0, jnp.asarray(q))
    origins = origins_of(minutes, every)
    known = known_inputs(flt.model, tl, origins, horizon, minutes)
    idx = origins - 1  # state at the end of minute o-1 = at time o
    reading, sensor, glucose = _paths_jit(flt, ys[idx], es[idx], known, jnp.asarray(origins, dtype=float))
    return {"origin": origins, "reading": np.asarray(reading), "sensor": np.asarray(sensor),
            "plasma_glucose": np.asarray(glucose)}


_filter_jit = eqx.filter_jit(filter_states)


@eqx.filter_jit
def _scores(flt, gi, obs, y0, q, phi, sig, warmup):
    def score(qi, phii, sigi):
        f = eqx.tree_at(lambda x: x.noise, flt, {**flt.noise, "phi": phii, "sigma": sigi})
        _, _, nll = filter_states(f, gi, obs, y0, qi)
        return jnp.sum(nll[warmup:])

    return jax.vmap(score)(q, phi, sig)
_paths_jit = eqx.filter_jit(forecast_paths)


def make_filter(model: Model, obs_model: ObservationModel, theta, hybrid, noise: dict, scale, day0: float,
                n_sub: int) -> Filter:
    out_col = model.output_names.index(obs_model.output_name(model))
    g = [i for i, n in enumerate(model.output_names) if n.split(".", 1)[1] == "plasma_glucose"]
    nonneg = np.array([model.declaration(n).nonnegative for n in model.state_names])
    return Filter(model, obs_model, out_col, g[0] if g else -1, n_sub, jnp.asarray(theta), hybrid,
                  {k: jnp.asarray(v) for k, v in noise.items()}, jnp.asarray(scale), jnp.asarray(nonneg),
                  jnp.asarray(float(day0)))


def tune_filter(flt: Filter, tl: Timeline, kind: str, y0, q_grid, phi_grid, sigma_grid, warmup: int = 360,
                gi: GridInputs | None = None, obs: np.ndarray | None = None) -> tuple[float, float, float]:
    """Filter settings ``(q, phi, sigma)`` of greatest predictive likelihood of the readings
    of ``tl`` (the one-step-ahead innovations of the filter; all combinations at once).

    This is how the filter learns how much of a surprise to put down to the sensor and
    how much to the patient, from the fitted record alone: the calibration's own noise
    estimate also carries model error, which would make the filter trust the model too
    little or too much."""
    minutes = int(math.ceil(float(np.max(tl.time)) + 1e-9))
    gi = grid_inputs(flt.model, tl, minutes) if gi is None else gi
    obs = jnp.asarray(readings_on_grid(tl, kind, minutes) if obs is None else obs)
    Q, PHI, SIG = np.meshgrid(q_grid, phi_grid, sigma_grid, indexing="ij")
    q, phi, sig = (jnp.asarray(a.ravel()) for a in (Q, PHI, SIG))
    scores = np.asarray(_scores(flt, gi, obs, y0, q, phi, sig, warmup))
    scores = np.where(np.isfinite(scores), scores, np.inf)
    k = int(np.argmin(scores))
    return float(q[k]), float(phi[k]), float(sig[k])
