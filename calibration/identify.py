"""Which fitted parameters a record's observations can inform, and which they identify.

Two questions, answered at two moments:

1. **Before fitting: is there any path from a parameter to an observation?**
   `informed_parameters` follows the model's own structure: the Jacobians of every
   state derivative and output with respect to the states and the parameters, taken
   at points of the population trajectory over the record (so inputs that are active
   somewhere count), give a graph; a parameter informs the record when it reaches an
   observed output through it (directly, or through states that do, including through
   the steady start). Parameters without such a path cannot move: calibration leaves
   them at their prior and says so; a record that informs none is refused.
2. **After fitting: does the record pin a parameter down?** `curvature_table`
   compares the posterior spread of each fitted parameter (Laplace: the inverse of the
   Gauss-Newton curvature of the negative log posterior, conditional on the other
   unknowns at their optimum) with its prior spread. A parameter the data shrink to
   less than half its prior spread is *identified*; to more than 90 % of it, *left at
   its prior*.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..composer import Model

__all__ = ["informed_parameters", "curvature_table", "IDENTIFIED", "AT_PRIOR"]

IDENTIFIED = 0.5  # posterior / prior spread below this: identified
AT_PRIOR = 0.9  # above this: left at the prior


@eqx.filter_jit
def _patterns(model: Model, theta, ys, us):
    def both(y, th, u):
        dy, outs = model.evaluate(0.0, y, th, u)
        return jnp.concatenate([dy, outs])

    jy = jax.vmap(lambda y, u: jax.jacfwd(both, argnums=0)(y, theta, u))(ys, us)
    jt = jax.vmap(lambda y, u: jax.jacfwd(both, argnums=1)(y, theta, u))(ys, us)
    j0 = jax.jacfwd(lambda th: model.initial_state(th, us[0]))(theta)
    return jnp.any(jy != 0, axis=0), jnp.any(jt != 0, axis=0), j0 != 0


def informed_parameters(model: Model, theta: np.ndarray, ys: np.ndarray, us: np.ndarray,
                        obs_cols: list[int]) -> np.ndarray:
    """``[param]`` bool: which parameters of ``model`` have a path to an observed output.

    ``ys[T, S]``, ``us[T, signal]``: states and inputs at sample points of the population
    trajectory; ``obs_cols``: positions of the observed outputs in ``model.output_names``."""
    S = len(model.state_names)
    dep_y, dep_t, dep_0 = (np.asarray(a) for a in _patterns(model, jnp.asarray(theta), jnp.asarray(ys),
                                                            jnp.asarray(us)))
    states_dy, outs_y = dep_y[:S], dep_y[S:]
    # states from which an observed output can be reached
    reach = outs_y[obs_cols].any(axis=0)
    while True:
        more = reach | states_dy[reach].any(axis=0)
        if (more == reach).all():
            break
        reach = more
    through_outputs = dep_t[S:][obs_cols].any(axis=0)
    through_states = dep_t[:S][reach].any(axis=0) | dep_0[reach].any(axis=0)
    return through_outputs | through_states


def curvature_table(names, values, units, prior_mu_values, prior_sd, hessian: np.ndarray,
                    informed: dict[str, bool] | None = None) -> list[dict]:
    """One row per fitted parameter: its value, the prior, the prior and posterior spreads
    (transformed space) and the verdict. ``hessian``: curvature of the negative log
    posterior in the transformed space, priors included."""
    try:
        cov = np.linalg.inv(hessian)
        post = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        post = np.full(len(names), np.nan)
    rows = []
    for i, name in enumerate(names):
        ratio = float(post[i] / prior_sd[i]) if np.isfinite(post[i]) else float("nan")
        if informed is not None and not informed.get(name, True):
            verdict = "not informed"
        elif not np.isfinite(ratio):
            verdict = "unknown"
        elif ratio < IDENTIFIED:
            verdict = "identified"
        elif ratio > AT_PRIOR:
            verdict = "left at prior"
        else:
            verdict = "weakly identified"
        rows.append({"parameter": name, "value": float(values[i]), "unit": units[i],
                     "prior": float(prior_mu_values[i]), "prior_sd": float(prior_sd[i]),
                     "posterior_sd": float(post[i]), "ratio": ratio, "verdict": verdict})
    return rows
