"""Per-patient calibration of a (hybrid) twin by gradients, for any composition.

What is estimated, jointly, from one patient's record (see
`physiotwin.calibration.objective`): the fitted mechanistic parameters with their
population prior; a factor per logged event for every input correction that applies
(e.g. a meal-size correction: carbohydrate counts are routinely 20-40 % off, Brazeau
et al., Diabetes Res Clin Pract 99:19, 2013); the initial state; the error parameters
of every observation model in the record; and, with ``hybrid=True``, the weights of
the residual networks (`Hybrid`).

**Multiple shooting.** The training part of the record is cut into windows (3 h by
default) integrated in parallel (`jax.vmap`) from their own start states; a penalty
ties each window's start to the previous window's end. This turns a week-long
sequential solve into a few hundred steps, keeps the optimisation away from the local
minima of long free runs, and lets the state jump slightly at window edges, which
absorbs disturbances the log does not explain.

**Validation and early stopping.** The last part of the record (``validation``,
default 1/7, at least 6 h) is never fitted: it is simulated freely from the end of
the training part, and its score (each kind's RMSE in units of its typical reading
error) decides when to stop and which of the multistart runs wins.

**Stages.** First the mechanistic twin (multistart, ``starts`` draws from the prior,
run together in one vmapped computation), then, for a hybrid, the residual networks
together with everything else, starting from the best mechanistic fit. Both results
are kept, so evaluation can compare them.

**Honest failure.** A fit whose every start ends with a non-finite loss, or whose
unknowns never leave their start, raises `CalibrationError`; a hybrid stage that
diverges is dropped (the twin is the mechanism) with a warning in the diagnostics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..composer import Model
from ..errors import CalibrationError
from ..observation import ObservationModel
from ..steady import settle
from .data import Record
from .hybrid import Hybrid
from .identify import curvature_table, informed_parameters
from .objective import Objective, fit_arrays, initial_params
from .optimize import adam_stage, bfgs_stage
from .problem import Problem, rest_signals, build_problem, substeps
from .settings import FitSettings
from .space import ParameterSpace, error_space

__all__ = ["FitSettings", "FitResult", "fit_record", "rest_state", "prepare_fit", "check_informed",
           "laplace_covariance"]


@dataclass
class FitResult:
    """Everything a `Twin` keeps from a calibration (transformed values)."""

    z: np.ndarray  # fitted parameters (final stage)
    z_mech: np.ndarray  # ... of the mechanistic stage
    errors: np.ndarray  # observation-error parameters
    errors_mech: np.ndarray
    corrections: dict[str, np.ndarray]  # log factors per logged event, by correction
    init: np.ndarray  # initial-state offsets (scaled)
    end_state: np.ndarray  # state at the end of the training part
    hybrid: Hybrid | None
    scale: np.ndarray | None = None  # typical size of each state (filter and shooting units)
    history: list[dict] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)
    # for replays (`physiotwin.calibration.whatif`), per variant ("twin", "mechanistic"): the
    # fitted start and end state of every shooting window, and the Laplace covariance of z
    windows: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    covariance: dict[str, np.ndarray] = field(default_factory=dict)
    # the final unknowns as the optimiser holds them (not saved): a population fit starts from them
    unknowns: dict | None = None


def rest_state(model: Model, theta, first_inputs, rest=None):
    """The state a record starts from: the organs' initial states, or the composed steady
    state at ``rest`` (coupled compositions)."""
    y = model.initial_state(jnp.asarray(theta), jnp.asarray(first_inputs))
    return y if rest is None else settle(model, jnp.asarray(theta), jnp.asarray(rest), y).y


def _observed_columns(model: Model, observations: Sequence[ObservationModel]) -> tuple[int, ...]:
    return tuple(model.output_names.index(om.output_name(model)) for om in observations)


def prepare_fit(model: Model, record: Record, observations, space: ParameterSpace, settings: FitSettings):
    """The objective and the windowed problem of one calibration."""
    stepping = substeps(model)
    theta0 = jnp.asarray(space.base)
    y0 = eqx.filter_jit(rest_state)(model, theta0, record.inputs.values[0], rest_signals(model))
    prob, shape, samples = build_problem(model, record, settings, theta0, y0, stepping)
    names = [f"{om.kind}.{p.name}" for om in observations for p in om.params]
    errors = error_space(names, [p for om in observations for p in om.params])
    cal = Objective(model, tuple(observations), _observed_columns(model, observations), space, errors,
                    tuple(c.prior_sd for c in record.corrections), settings, stepping)
    return cal, prob, shape, samples


def check_informed(model, record, cal: Objective, space: ParameterSpace, samples) -> dict[str, bool]:
    """``{fitted parameter: has a path to an observation}``; refuses a record that informs none."""
    informed = informed_parameters(model, space.base, samples[0], samples[1], list(cal.obs_cols))
    out = {n: bool(informed[i]) for n, i in zip(space.names, space.index)}
    if space.names and not any(out.values()):
        raise CalibrationError(f"{record.source}: the record's observations ({', '.join(record.kinds)}) inform none "
                               f"of the fitted parameters ({', '.join(space.names)}): no path leads from them to "
                               f"what was measured; fit other parameters or give other observations")
    return out


def _count_check(record: Record, cal: Objective, prob: Problem, W: int) -> None:
    n_obs = int(prob.n_obs)
    n_corr = sum(c.n_events for c in record.corrections)
    S = len(cal.model.state_names)
    n_unknown = len(cal.space.names) + n_corr + S + len(cal.errors.names)
    if n_obs < n_unknown:
        raise CalibrationError(f"{record.source}: {n_obs} readings in the fitted part, fewer than the {n_unknown} "
                               f"values to estimate ({len(cal.space.names)} parameters, {n_corr} input corrections, "
                               f"{S} initial states, {len(cal.errors.names)} error parameters)")


def _z_scale(cal: Objective, params, prob: Problem) -> np.ndarray:
    """A preconditioner for the fitted parameters from the curvature of the loss (per reading)
    at the first start: ``T`` with ``T^T H T = I``, so that BFGS starts with parameters of
    unit curvature and no correlation (the inverse Cholesky factor, on the diagonally scaled
    curvature for conditioning)."""
    first = jax.tree_util.tree_map(lambda a: a[0], params)
    H = np.asarray(gauss_newton_jit(cal, first, prob)) / float(prob.n_obs)
    d = np.clip(1.0 / np.sqrt(np.maximum(np.diag(H), 1e-12)), 0.01, 100.0)
    try:
        L = np.linalg.cholesky(d[:, None] * H * d[None, :] + 1e-8 * np.eye(len(d)))
        return d[:, None] * np.linalg.inv(L).T
    except np.linalg.LinAlgError:
        return np.diag(d)


def _mechanistic_stage(cal: Objective, prob: Problem, record: Record, W: int, history: list):
    s = cal.settings
    rng = np.random.default_rng(s.seed)
    z0 = np.tile(cal.space.mu, (s.starts, 1))
    if s.starts > 1:
        z0[1:] += rng.standard_normal((s.starts - 1, len(cal.space.mu))) * cal.space.sd
    params = initial_params(cal, z0, [c.n_padded for c in record.corrections], len(cal.model.state_names), W)
    if s.optimizer == "bfgs":
        best, val = bfgs_stage(cal, params, prob, history, _z_scale(cal, params, prob))
    else:
        best, _, val, _ = adam_stage(cal, params, None, prob, s.steps, "mechanistic", history, "mechanistic", False)
    if not np.isfinite(val).any():
        raise CalibrationError(f"{record.source}: the fit failed: at every one of the {s.starts} starts the loss or "
                               f"the held-out run is not finite (the solver diverged); try fewer parameters "
                               f"(--fit), a shorter shooting window (--window) or more --starts")
    k = int(np.argmin(val))
    mech = jax.tree_util.tree_map(lambda a: a[k], best)
    start = jax.tree_util.tree_map(lambda a: a[k], params)
    moved = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
                for a, b in zip(jax.tree_util.tree_leaves(mech), jax.tree_util.tree_leaves(start)))
    if not moved > 1e-9:
        raise CalibrationError(f"{record.source}: the fit made no step: every unknown is still at its start "
                               f"(the gradient is zero or not finite there)")
    return mech, val, k


def mechanistic_trajectory(cal: Objective, prob: Problem, mech) -> tuple[np.ndarray, np.ndarray]:
    """States ``[T, S]`` and outputs ``[T, O]`` of the fitted mechanism at every minute of the windows."""
    model = cal.model
    theta = cal.space.theta(mech["z"])
    arrays = fit_arrays(cal, prob, mech, None)
    nk, S = len(cal.obs_cols), len(model.state_names)
    ys = np.asarray(arrays["observed"])[..., nk:nk + S].reshape(-1, S)
    values = np.asarray(arrays["values"])
    outs = np.asarray(jax.jit(jax.vmap(lambda y, u: model.evaluate(0.0, y, theta, u)[1]))(
        jnp.asarray(ys), values.reshape(-1, values.shape[-1])))
    return ys, outs


def _hybrid_stage(cal: Objective, prob: Problem, mech, diag_warnings: list, history: list,
                  shared: Hybrid | None = None):
    """Train residual networks with the mechanistic unknowns; with ``shared`` (a
    population's networks), train only the patient's conditioning vector and keep the
    networks as they are. Returns ``(params, hybrid)``, or None when the stage diverged."""
    s = cal.settings
    model = cal.model
    if shared is None:
        ys, outs = mechanistic_trajectory(cal, prob, mech)
        net = Hybrid.create(model, jax.random.PRNGKey(s.seed), s.width, s.depth, ys, outs, only=s.slots or None)
    else:
        net = shared.with_conditioning(np.zeros(shared.cond.shape[0]))
    if not net.slots:
        raise CalibrationError(f"no organ in the composition ({', '.join(model.organ_names)}) declares a "
                               f"residual slot: use --no-hybrid")
    batched = jax.tree_util.tree_map(lambda a: a[None], mech)
    best_h, net, val_h, diverged = adam_stage(cal, batched, net, prob, s.hybrid_steps, "hybrid", history, "hybrid",
                                              "conditioning" if shared is not None else True)
    if not np.isfinite(val_h[0]) or diverged:
        diag_warnings.append("the hybrid stage diverged (non-finite loss); the twin is the calibrated mechanism")
    if not np.isfinite(val_h[0]):
        return None
    return jax.tree_util.tree_map(lambda a: a[0], best_h), net


def gauss_newton(cal: Objective, params, prob: Problem, hybrid: Hybrid | None = None) -> np.ndarray:
    """Curvature of the negative log posterior in the fitted parameters (transformed), the
    other unknowns (and the networks of ``hybrid``) held at ``params``: the Gauss-Newton
    approximation of the data and continuity terms (Jacobians by forward mode) plus the
    exact prior curvature."""
    nk = len(cal.obs_cols)

    def predict(z):
        p = {**params, "z": z}
        theta = cal.space.theta(z)
        ys = cal.starts(p, prob, theta)
        y_end, observed = cal.run_windows(cal.field(theta, hybrid, prob), ys, cal.corrected_windows(p, prob),
                                          prob.win_t0)
        return observed[..., :nk], (y_end[:-1] - ys[1:]) / (prob.scale * cal.settings.continuity)

    errors = cal.error_params(params["errors"])
    pred = predict(params["z"])[0]
    j_pred, j_def = jax.jacfwd(predict)(params["z"])
    grad_nll = jax.grad(lambda q: cal.data_nll(q, prob, errors))
    hj = jax.vmap(lambda v: jax.jvp(grad_nll, (pred,), (v,))[1], in_axes=-1, out_axes=-1)(j_pred)
    nz = params["z"].shape[0]
    data = j_pred.reshape(-1, nz).T @ hj.reshape(-1, nz)
    cont = j_def.reshape(-1, nz).T @ j_def.reshape(-1, nz)
    return 0.5 * (data + data.T) + cont + jnp.diag(1.0 / jnp.asarray(cal.space.sd) ** 2)


gauss_newton_jit = eqx.filter_jit(gauss_newton)


def laplace_covariance(hess: np.ndarray) -> np.ndarray:
    """The Laplace approximation's covariance of the transformed parameters: the inverse of
    the curvature (a pseudo-inverse on its positive part when it is not positive definite)."""
    hess = 0.5 * (hess + hess.T)
    w, v = np.linalg.eigh(hess)
    w = np.where(w > 1e-10 * max(float(np.max(np.abs(w), initial=0.0)), 1e-300), w, np.inf)
    return (v / w) @ v.T


def _identifiability(cal: Objective, params, prob: Problem, model: Model, informed, hess) -> list[dict]:
    space = cal.space
    if not space.names:
        return []
    values = np.asarray(space.values(jnp.asarray(params["z"])))
    prior_values = np.asarray(space.values(jnp.asarray(space.mu)))
    units = [model.declaration(n).unit for n in space.names]
    return curvature_table(space.names, values, units, prior_values, space.sd, hess, informed)


def _residual_share(cal: Objective, net: Hybrid, observed, values, theta) -> dict[str, float]:
    nk, S = len(cal.obs_cols), len(cal.model.state_names)
    obs_np = np.asarray(observed)
    r = obs_np[..., nk + S:].reshape(-1, len(net.slots))
    ys = obs_np[..., nk:nk + S].reshape(-1, S)
    dy = np.asarray(jax.jit(jax.vmap(lambda y, u: cal.model.evaluate(0.0, y, theta, u)[0]))(
        jnp.asarray(ys), values.reshape(-1, values.shape[-1])))
    # an additive slot: RMS term over RMS total derivative; a modulating slot: RMS relative change
    return {slot.name: float(np.sqrt(np.mean(r[:, i] ** 2)) if slot.modulates else
                             np.sqrt(np.mean(r[:, i] ** 2)) / max(np.sqrt(np.mean((dy[:, slot.state] + r[:, i]) ** 2)),
                                                                  1e-12))
            for i, slot in enumerate(net.slots)}


def _diagnostics(cal: Objective, prob: Problem, record: Record, final, net, arrays: dict, shape, extra: dict):
    """Fit and held-out RMSE per kind, continuity defects, error parameters, residual shares."""
    W, L, V = shape
    kinds = record.kinds
    theta = cal.space.theta(final["z"])
    starts, y_end = np.asarray(arrays["starts"]), np.asarray(arrays["y_end"])
    scale = np.asarray(prob.scale)
    defect = ((y_end[:-1] - starts[1:]) / scale) if W > 1 else np.zeros((1, 1))
    errors = cal.error_params(final["errors"])
    diag = {
        "windows": W, "window_minutes": L, "validation_minutes": V, "kinds": list(kinds),
        "train_readings": {k: int(np.isfinite(record.obs[i, :W * L]).sum()) for i, k in enumerate(kinds)},
        "validation_readings": {k: int(np.isfinite(record.obs[i, W * L:]).sum()) for i, k in enumerate(kinds)},
        "train_rmse": _by_kind(kinds, arrays["parts"]["train_rmse"]), "validation_rmse": _by_kind(kinds, arrays["rmse"]),
        "validation_score": float(arrays["score"]), "continuity_defect_rms": float(np.sqrt(np.mean(defect ** 2))),
        "errors": {k: {n: float(v) for n, v in e.items()} for k, e in zip(kinds, errors)},
        **extra,
    }
    if net is not None:
        diag["residual_share"] = _residual_share(cal, net, arrays["observed"], np.asarray(arrays["values"]), theta)
    return diag


def _by_kind(kinds, values) -> dict[str, float | None]:
    values = np.asarray(values)
    return {k: (float(v) if np.isfinite(v) else None) for k, v in zip(kinds, values)}


def fit_record(model: Model, record: Record, observations: Sequence[ObservationModel], space: ParameterSpace,
               settings: FitSettings, hybrid: bool | Hybrid) -> tuple[FitResult, ParameterSpace]:
    """Calibrate ``model`` to ``record``; see the module docstring. Returns the result and the
    parameter space actually fitted (``space`` without the parameters no observation informs).
    ``hybrid``: train networks (`True`), none (`False`), or use these (a population's shared
    networks: only the patient's conditioning vector is fitted)."""
    t_start = time.perf_counter()
    if settings.window is None:
        settings = replace(settings, window=int(max(o.shooting_window for o in model.organs)))
    if settings.steps is None:
        settings = replace(settings, steps=200 if settings.window <= 720 else 400)
    cal, prob, shape, samples = prepare_fit(model, record, observations, space, settings)
    informed = check_informed(model, record, cal, space, samples)
    keep = [n for n in space.names if informed[n]]
    if len(keep) < len(space.names):
        space = _subspace(space, keep)
        cal = Objective(cal.model, cal.observations, cal.obs_cols, space, cal.errors, cal.corr_sd, settings,
                        cal.stepping)
    _count_check(record, cal, prob, shape[0])
    if not np.isfinite(record.obs[:, shape[0] * shape[1]:]).any():
        raise CalibrationError(f"{record.source}: no readings fall in the held-out last {shape[2]} min of the record, "
                               f"which validation needs; give a longer record")
    history: list[dict] = []
    warnings: list[str] = []
    mech, val, k = _mechanistic_stage(cal, prob, record, shape[0], history)
    mech_arrays = fit_arrays(cal, prob, mech, None)
    final, net, arrays = mech, None, mech_arrays
    if hybrid is not False:
        stage = _hybrid_stage(cal, prob, mech, warnings, history, hybrid if isinstance(hybrid, Hybrid) else None)
        if stage is not None:
            final, net = stage
            arrays = fit_arrays(cal, prob, final, net)
    extra = {"mechanistic_validation_rmse": _by_kind(record.kinds, mech_arrays["rmse"]),
             "mechanistic_validation_score": float(val[k]), "multistart_validation_score": [float(v) for v in val],
             "chosen_start": k, "not_informed": [n for n, ok in informed.items() if not ok], "warnings": warnings}
    diag = _diagnostics(cal, prob, record, final, net, arrays, shape, extra)
    hess_mech = np.asarray(gauss_newton_jit(cal, mech, prob)) if space.names else np.zeros((0, 0))
    hess = hess_mech if net is None or not space.names else np.asarray(gauss_newton_jit(cal, final, prob, net))
    diag["identifiability"] = _identifiability(cal, mech, prob, model, informed, hess_mech) + [
        {"parameter": n, "verdict": "not informed"} for n, ok in informed.items() if not ok]
    diag["seconds"] = time.perf_counter() - t_start
    return FitResult(
        z=np.asarray(final["z"]), z_mech=np.asarray(mech["z"]), errors=np.asarray(final["errors"]),
        errors_mech=np.asarray(mech["errors"]),
        corrections={c.name: np.asarray(v)[:c.n_events] for c, v in zip(record.corrections, final["corr"])},
        init=np.asarray(final["init"]), end_state=np.asarray(arrays["end_state"]), hybrid=net,
        scale=np.asarray(prob.scale), history=history, diagnostics=diag,
        windows={"twin": (np.asarray(arrays["starts"]), np.asarray(arrays["y_end"])),
                 "mechanistic": (np.asarray(mech_arrays["starts"]), np.asarray(mech_arrays["y_end"]))},
        covariance={"twin": laplace_covariance(hess), "mechanistic": laplace_covariance(hess_mech)},
        unknowns=jax.tree_util.tree_map(np.asarray, final)), space


def _subspace(space: ParameterSpace, names: Sequence[str]) -> ParameterSpace:
    sel = np.array([space.names.index(n) for n in names], dtype=int)
    return ParameterSpace(tuple(names), space.index[sel], space.kind[sel], space.lower[sel], space.upper[sel],
                          space.base, space.mu[sel], space.sd[sel])
