"""The calibration objective: negative log posterior of a record, per reading.

Unknowns (a pytree ``params``):

- ``z``: the fitted mechanistic parameters, transformed (`ParameterSpace`), with the
  population prior;
- ``corr``: one log factor per logged event of every input correction that applies,
  each with its own prior (`physiotwin.InputCorrection`);
- ``init``: the initial state, as offsets (in units of each state's typical size) from
  the model's rest state: the composed steady state for coupled compositions;
- ``shoot``: the starts of windows 2..W (multiple shooting), as offsets from the
  population trajectory shifted by the change of the rest state; a penalty ties each to
  the end of the previous window;
- ``errors``: the observation models' error parameters, transformed (`error_space`).

The data term is the sum of every observation model's likelihood of its readings.
Validation runs the held-out part freely from the end of the last window and scores
each kind's RMSE in units of its typical reading error (`ObservationModel.typical_error`).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from ..composer import Model
from ..integrate import FixedSteps, integrate
from ..observation import ObservationModel
from ..steady import settle
from .hybrid import Hybrid, TwinField
from .problem import Problem, corrected
from .settings import FitSettings
from .space import ParameterSpace

__all__ = ["Objective", "fit_arrays", "initial_params"]


class Objective(eqx.Module):
    """The loss and validation of one calibration (closed over, never hashed)."""

    model: Model = eqx.field(static=True)
    observations: tuple[ObservationModel, ...] = eqx.field(static=True)
    obs_cols: tuple[int, ...] = eqx.field(static=True)
    space: ParameterSpace = eqx.field(static=True)
    errors: ParameterSpace = eqx.field(static=True)
    corr_sd: tuple[float, ...] = eqx.field(static=True)
    settings: FitSettings = eqx.field(static=True)
    stepping: FixedSteps = eqx.field(static=True)

    # ------------------------------------------------------------ pieces
    def error_params(self, ze) -> list[dict]:
        """Each observation model's error parameters, by name."""
        values = self.errors.values(ze)
        out, k = [], 0
        for om in self.observations:
            out.append({p.name: values[k + i] for i, p in enumerate(om.params)})
            k += len(om.params)
        return out

    def rest_state_of(self, theta, prob: Problem):
        """The model's state at rest: the composed steady state when organs are coupled."""
        y = self.model.initial_state(theta, prob.win.values[0, 0])
        if prob.rest is None:
            return y
        return settle(self.model, theta, prob.rest, y).y

    def starts(self, params, prob: Problem, theta):
        """Window starts: the first at the rest state plus the fitted offsets; the others on
        the population trajectory, shifted by how far the parameters move the rest state (so
        a parameter that moves an equilibrium moves every window with it), plus their offsets."""
        rest = self.rest_state_of(theta, prob)
        y0 = rest + prob.scale * params["init"]
        rest = prob.base[1:] + (rest - prob.base_rest) + prob.scale * params["shoot"]
        ys = jnp.concatenate([y0[None], rest], axis=0)
        return jnp.where(prob.nonneg, jnp.maximum(ys, 0.0), ys)

    def field(self, theta, hybrid: Hybrid | None, prob: Problem) -> TwinField:
        return TwinField(self.model, theta, hybrid, prob.day0)

    def observe(self, field: TwinField):
        cols = jnp.asarray(self.obs_cols, dtype=int)

        def observe(t, y, u):
            _, outs, r = field.evaluate(t, y, u)
            return jnp.concatenate([outs[cols], y, r])
        return observe

    def run_windows(self, field: TwinField, y_starts, win, t0s):
        """Integrate every window from its start: ``(y_end[W,S], observed[W,L,...])``."""
        observe = self.observe(field)
        return jax.vmap(lambda y0, gi, t0: integrate(field, y0, gi, self.stepping, t0=t0, observe=observe))(
            y_starts, win, t0s)

    def corrected_windows(self, params, prob: Problem):
        values = corrected(prob.win.values, prob.corr_win, params["corr"], prob.columns)
        return eqx.tree_at(lambda w: w.values, prob.win, values)

    # ------------------------------------------------------------ loss
    def data_nll(self, observed, prob: Problem, errors):
        nll = jnp.zeros(())
        for k, om in enumerate(self.observations):
            mask = jnp.isfinite(prob.obs[k])
            nll = nll + jnp.sum(jax.vmap(lambda p, o, m, pv, g: om.nll(p, jnp.where(m, o, 0.0), m, pv, g, errors[k]))(
                observed[..., k], prob.obs[k], mask, prob.prev[k], prob.gap[k]))
        return nll

    def prior(self, params):
        s = self.settings
        corr = sum((0.5 * jnp.sum((c / sd) ** 2) for c, sd in zip(params["corr"], self.corr_sd)), jnp.zeros(()))
        return (self.space.prior(params["z"]) + corr + 0.5 * jnp.sum((params["init"] / s.init_sd) ** 2)
                + self.errors.prior(params["errors"]))

    def loss(self, params, hybrid: Hybrid | None, prob: Problem):
        """Negative log posterior per reading, and its parts."""
        theta = self.space.theta(params["z"])
        field = self.field(theta, hybrid, prob)
        ys = self.starts(params, prob, theta)
        y_end, observed = self.run_windows(field, ys, self.corrected_windows(params, prob), prob.win_t0)
        nll = self.data_nll(observed, prob, self.error_params(params["errors"]))
        prior = self.prior(params)
        continuity = 0.5 * jnp.sum(((y_end[:-1] - ys[1:]) / (prob.scale * self.settings.continuity)) ** 2)
        penalty = jnp.zeros(())
        if hybrid is not None and hybrid.slots:
            r = observed[..., len(self.obs_cols) + len(self.model.state_names):]
            scales = jnp.asarray([s.scale for s in hybrid.slots])
            # a population's conditioning vector has a standard normal prior
            penalty = (self.settings.residual_weight * jnp.mean((r / scales) ** 2) * prob.n_obs
                       + self.settings.l2 * hybrid.l2() + 0.5 * jnp.sum(hybrid.cond ** 2))
        total = nll + prior + continuity + penalty
        parts = {"nll": nll, "prior": prior, "continuity": continuity, "penalty": penalty,
                 "train_rmse": self.rmse(observed[..., :len(self.obs_cols)], jnp.moveaxis(prob.obs, 0, -1))}
        return total / prob.n_obs, parts

    @staticmethod
    def rmse(pred, obs):
        """RMSE per kind over the present readings (``[..., kind]`` arrays): NaN for a kind with
        no reading, +inf where a prediction is not finite."""
        mask = jnp.isfinite(obs)
        axes = tuple(range(obs.ndim - 1))
        n = jnp.sum(mask, axis=axes)
        sse = jnp.sum(jnp.where(mask, obs - pred, 0.0) ** 2, axis=axes)
        sse = jnp.where(jnp.isfinite(sse), sse, jnp.inf)
        return jnp.where(n > 0, jnp.sqrt(sse / jnp.maximum(n, 1)), jnp.nan)

    def score(self, rmse):
        """One number from per-kind RMSEs: their mean in units of each kind's typical error
        (kinds without readings left out; +inf when a prediction is not finite)."""
        typical = jnp.asarray([om.typical_error for om in self.observations])
        has = ~jnp.isnan(rmse)
        return jnp.sum(jnp.where(has, rmse / typical, 0.0)) / jnp.maximum(jnp.sum(has), 1)

    def validate(self, params, hybrid: Hybrid | None, prob: Problem):
        """The free run over the held-out part, from the end of the last window:
        ``(score, rmse per kind, state at the end of the fitted part, state at the end)``."""
        theta = self.space.theta(params["z"])
        field = self.field(theta, hybrid, prob)
        ys = self.starts(params, prob, theta)
        y_end, _ = self.run_windows(field, ys, self.corrected_windows(params, prob), prob.win_t0)
        val = eqx.tree_at(lambda v: v.values, prob.val,
                          corrected(prob.val.values, prob.corr_val, params["corr"], prob.columns))
        t0 = prob.win_t0[-1] + prob.win.values.shape[1]
        y_val_end, observed = integrate(field, y_end[-1], val, self.stepping, t0=t0, observe=self.observe(field))
        rmse = self.rmse(observed[:, :len(self.obs_cols)], prob.val_obs.T)
        return self.score(rmse), rmse, y_end[-1], y_val_end


def _fit_arrays(cal: Objective, prob: Problem, params, hybrid: Hybrid | None) -> dict:
    """Everything the diagnostics need from one set of unknowns, in one program: the loss
    parts, the held-out score and RMSE per kind, the window starts and ends, what the
    windows observed, and the state at the end of the fitted part."""
    _, parts = cal.loss(params, hybrid, prob)
    score, rmse, end_state, _ = cal.validate(params, hybrid, prob)
    theta = cal.space.theta(params["z"])
    starts = cal.starts(params, prob, theta)
    win = cal.corrected_windows(params, prob)
    y_end, observed = cal.run_windows(cal.field(theta, hybrid, prob), starts, win, prob.win_t0)
    return {"parts": parts, "score": score, "rmse": rmse, "end_state": end_state, "starts": starts, "y_end": y_end,
            "observed": observed, "values": win.values}


fit_arrays = eqx.filter_jit(_fit_arrays)


def initial_params(objective: Objective, z0, corr_pads: Sequence[int], n_states: int, W: int):
    """The unknowns at their start for ``len(z0)`` multistart runs (batched pytree)."""
    S = z0.shape[0]
    return {
        "z": jnp.asarray(z0),
        "corr": tuple(jnp.zeros((S, n)) for n in corr_pads),
        "init": jnp.zeros((S, n_states)),
        "shoot": jnp.zeros((S, W - 1, n_states)),
        "errors": jnp.tile(jnp.asarray(objective.errors.mu), (S, 1)),
    }
