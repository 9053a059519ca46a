"""The state filter of a twin: an extended Kalman filter over the minute grid.

The filtered state is the model state plus one error state per observation kind (an
autocorrelated reading error, e.g. a CGM's slow sensor drift, is carried as a state
so the filter does not mistake it for physiology; a white error keeps its error state
at zero). Every minute:

1. predict with the twin's own fixed-step integrator (`physiotwin.integrate.FixedSteps`),
   and propagate the covariance with the linearisation of that same step (the
   integrator's `FixedSteps.transition` of the vector field's Jacobian after the
   organ resets), error states with their one-minute correlation;
2. update with every reading stamped at the end of that minute, one kind after the
   other (sequential scalar updates of the joint linearised update).

Process noise is diagonal, ``(q * typical state size)^2`` per minute; ``q`` and the
error parameters an observation model offers for tuning (`ObservationModel.filter_tuning`)
are chosen on the fitted record (`tune_filter`). The filter is causal: the estimate at
the end of minute ``k`` uses readings up to then only.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..inputs import Inputs
from ..integrate import FixedSteps
from ..observation import ObservationModel
from .hybrid import TwinField

__all__ = ["Filter", "filter_states", "kalman_update", "tune_filter", "P0_SCALE", "GATE", "MAX_MOVE"]

P0_SCALE = 0.3  # initial state uncertainty, as a fraction of each state's typical size


class Filter(eqx.Module):
    """Everything the filter and the forward simulation need, as one pytree."""

    field: TwinField
    stepping: FixedSteps = eqx.field(static=True)
    observations: tuple[ObservationModel, ...] = eqx.field(static=True)
    obs_cols: tuple[int, ...] = eqx.field(static=True)
    errors: tuple[dict, ...]
    scale: jax.Array
    nonneg: jax.Array

    def step(self, t, y, u, mask):
        return self.stepping.step(self.field, t, self.field.reset(t, y, u, mask), u)

    def transition(self, t, y, u, mask):
        """Jacobian of one minute's step: the integrator's linearised step of the vector
        field's Jacobian after the resets, times the Jacobian of the resets."""
        R = jax.jacfwd(lambda yy: self.field.reset(t, yy, u, mask))(y)
        J = jax.jacfwd(lambda yy: self.field(t, yy, u))(self.field.reset(t, y, u, mask))
        return self.stepping.transition(J) @ R

    def observed(self, t, y, u):
        return self.field.outputs(t, y, u)[jnp.asarray(self.obs_cols, dtype=int)]

    def noise(self):
        """``(rho, error variance, reading variance)`` per kind."""
        fn = [om.filter_noise(e) for om, e in zip(self.observations, self.errors)]
        return tuple(jnp.stack([jnp.asarray(getattr(f, a), float) for f in fn])
                     for a in ("rho", "error_var", "reading_var"))


GATE = 4.0  # a reading's innovation is clipped at GATE predicted SDs (a Huber-type robust update)
MAX_MOVE = 0.5  # largest correction of any model state by one reading, as a fraction of its typical size


def kalman_update(x, P, y_pred, outs, Hy, z, r, S, k, scale):
    """Sequential update with the reading ``z`` of kind ``k`` (skipped when absent).

    Robust to readings the linearisation cannot explain: the innovation is clipped at
    `GATE` predicted SDs, and the correction is shrunk so that no model state moves by
    more than `MAX_MOVE` of its typical size ``scale``. The covariance is updated with
    the gain actually applied (Joseph form, valid for any gain), so it stays honest."""
    nk = Hy.shape[0]
    H = jnp.concatenate([Hy[k], jnp.zeros(nk).at[k].set(1.0)])
    present = jnp.isfinite(z)
    predicted = outs[k] + Hy[k] @ (x[:S] - y_pred) + x[S + k]
    innov = jnp.where(present, z - predicted, 0.0)
    s = H @ P @ H + r
    K = P @ H / s
    bound = GATE * jnp.sqrt(s)
    gate = jnp.where(jnp.abs(innov) > bound, bound / jnp.maximum(jnp.abs(innov), 1e-300), 1.0)
    move = jnp.max(jnp.abs(K[:S] * innov * gate) / scale)
    K = K * gate * jnp.minimum(1.0, MAX_MOVE / jnp.maximum(move, 1e-300))
    x = x + jnp.where(present, K * innov, 0.0)
    IKH = jnp.eye(x.shape[0]) - jnp.outer(K, H)
    P = jnp.where(present, IKH @ P @ IKH.T + r * jnp.outer(K, K), P)  # Joseph form
    return x, P, jnp.where(present, 0.5 * (innov ** 2 / s + jnp.log(s)), 0.0)


def filter_states(flt: Filter, inputs: Inputs, obs: jax.Array, y0: jax.Array, q: jax.Array):
    """Run the filter over every minute of ``inputs`` (``obs[kind, minute]``). Returns the
    filtered state and error states at the END of each minute (after its readings), and
    the negative log predictive likelihood of the readings of each minute:
    ``(y[K, S], e[K, kind], nll[K])``."""
    S = y0.shape[0]
    nk = len(flt.observations)
    rho, err_var, r = flt.noise()
    q_state = (q * flt.scale) ** 2
    q_err = err_var * (1.0 - rho ** 2)

    def body(carry, k):
        y, e, P = carry
        t = k * 1.0
        u, mask = inputs.values[k], inputs.resets[k]
        F = flt.transition(t, y, u, mask)
        y = flt.step(t, y, u, mask)
        A = jnp.zeros((S + nk, S + nk)).at[:S, :S].set(F).at[S:, S:].set(jnp.diag(rho))
        P = A @ P @ A.T + jnp.diag(jnp.concatenate([q_state, q_err]))
        outs = flt.observed(t + 1.0, y, u)
        Hy = jax.jacrev(lambda yy: flt.observed(t + 1.0, yy, u))(y)
        x, nll = jnp.concatenate([y, e]), jnp.zeros(())
        for i in range(nk):
            x, P, n_i = kalman_update(x, P, y, outs, Hy, obs[i, k], r[i], S, i, flt.scale)
            nll = nll + n_i
        P = 0.5 * (P + P.T)
        y = jnp.where(flt.nonneg, jnp.maximum(x[:S], 0.0), x[:S])
        return (y, x[S:], P), (y, x[S:], nll)

    P0 = jnp.diag(jnp.concatenate([(P0_SCALE * flt.scale) ** 2, err_var]))
    _, (ys, es, nll) = jax.lax.scan(body, (y0, jnp.zeros(nk), P0), jnp.arange(inputs.values.shape[0]))
    return ys, es, nll


filter_jit = eqx.filter_jit(filter_states)


def with_errors(flt: Filter, settings: dict) -> Filter:
    """The filter with some error parameters replaced (``{"kind.param": value}``)."""
    errors = tuple({n: jnp.asarray(settings.get(f"{om.kind}.{n}", v)) for n, v in e.items()}
                   for om, e in zip(flt.observations, flt.errors))
    return eqx.tree_at(lambda f: f.errors, flt, errors)


@eqx.filter_jit
def _scores(flt: Filter, inputs, obs, y0, q, grid, names, warmup):
    def score(qi, values):
        f = with_errors(flt, dict(zip(names, values)))
        _, _, nll = filter_states(f, inputs, obs, y0, qi)
        return jnp.sum(nll[warmup:])

    return jax.vmap(score)(q, grid)


def tuning_grid(observations: Sequence[ObservationModel]) -> tuple[list[str], np.ndarray]:
    """Every combination of the error-parameter values the observation models offer for tuning."""
    names, values = [], []
    for om in observations:
        for param, options in om.filter_tuning.items():
            names.append(f"{om.kind}.{param}")
            values.append(tuple(options))
    combos = list(itertools.product(*values)) if values else [()]
    return names, np.asarray(combos, dtype=float).reshape(len(combos), len(names))


def tune_filter(flt: Filter, inputs: Inputs, obs: np.ndarray, y0, q_grid: Sequence[float], warmup: int = 360
                ) -> dict[str, float]:
    """Filter settings of greatest predictive likelihood of the readings (the one-step-ahead
    innovations; all combinations of ``q_grid`` and the models' tuning grids at once):
    ``{"q": ..., "kind.param": ...}``.

    This is how the filter learns how much of a surprise to put down to the sensor and
    how much to the patient, from the fitted record alone: the calibration's own error
    estimate also carries model error, which would make the filter trust the model too
    little or too much."""
    names, grid = tuning_grid(flt.observations)
    q = np.repeat(np.asarray(q_grid, dtype=float), len(grid))
    combos = np.tile(grid, (len(q_grid), 1))
    scores = np.asarray(_scores(flt, inputs, jnp.asarray(obs), y0, jnp.asarray(q), jnp.asarray(combos),
                                tuple(names), warmup))
    scores = np.where(np.isfinite(scores), scores, np.inf)
    k = int(np.argmin(scores))
    out = {"q": float(q[k])}
    out.update({n: float(v) for n, v in zip(names, combos[k])})
    return out

