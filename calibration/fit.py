"""Per-patient calibration of a (hybrid) twin by gradients.

What is estimated, jointly, from one patient's record:

- the fitted mechanistic parameters (`ParameterSpace`), in transformed space, with the
  population prior;
- a size correction for every logged meal (``grams * exp(c)``, prior ``c ~ N(0, 0.3^2)``):
  carbohydrate counts are routinely 20-40 % off (Brazeau et al., Diabetes Res Clin
  Pract 99:19, 2013);
- the initial state (offsets from the model's basal state);
- the observation model's noise parameters (``sigma``, and ``phi`` for AR(1) noise);
- with ``hybrid=True``, the weights of the residual networks (`Hybrid`).

**Multiple shooting.** The training part of the record is cut into windows (6 h by
default) that are integrated in parallel (`jax.vmap`) from their own start states;
a penalty ties each window's start to the previous window's end. This turns a
week-long sequential solve into a few hundred steps (20x faster gradients on two
cores), keeps the optimisation away from the local minima of long free runs, and lets
the state jump slightly at window edges, which absorbs unlogged snacks and other
disturbances the meal log does not explain.

**Validation and early stopping.** The last part of the record (``validation``,
default 1/7, at least 6 h) is never fitted: it is simulated freely from the end of
the training part, and its RMSE against the readings decides when to stop and which
of the multistart runs wins.

**Stages.** First the mechanistic twin (multistart, ``starts`` draws from the prior,
run together in one vmapped computation), then, for a hybrid, the residual networks
together with everything else, starting from the best mechanistic fit. Both results
are kept, so evaluation can compare them.

Optimisers: ``optimizer="adam"`` (optax, with early stopping) or ``"bfgs"``
(optimistix BFGS on the mechanistic stage; networks are always trained with Adam).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..composer import Model
from .data import Record, previous_reading
from .grid import MEAL_SIGNALS, GridInputs, integrate, substeps
from .hybrid import Hybrid
from .observation import ObservationModel
from .space import CalibrationError, ParameterSpace

__all__ = ["FitSettings", "FitResult", "fit_record"]


@dataclass(frozen=True)
class FitSettings:
    """Calibration options (all stored with the twin).

    window: multiple-shooting window (min). validation: fraction of the record held
    out at its end (at least 360 min). starts: multistart runs. steps / hybrid_steps:
    iteration budgets. lr / net_lr: Adam learning rates. patience: validation checks
    without an improvement of at least ``min_improvement`` (relative) before stopping;
    check_every: iterations between checks.
    meal_sd: prior SD of log meal-size corrections. continuity: allowed jump at
    window edges, as a fraction of each state's typical size. init_sd: prior SD of the
    initial-state offsets (same units). width/depth: residual MLPs. l2: weight decay of
    the nets. residual_weight: penalty on the mean squared residual term (in units of
    the slot scale). seed: all random draws.
    """

    window: int = 180
    validation: float = 1.0 / 7.0
    starts: int = 2
    steps: int = 200
    hybrid_steps: int = 150
    lr: float = 0.05
    net_lr: float = 3e-3
    patience: int = 4
    check_every: int = 20
    min_improvement: float = 0.003
    meal_sd: float = 0.3
    continuity: float = 0.02
    init_sd: float = 1.0
    width: int = 16
    depth: int = 2
    l2: float = 1e-4
    residual_weight: float = 1e-2
    seed: int = 0
    optimizer: str = "bfgs"
    progress: bool = True

    def __post_init__(self):
        if self.optimizer not in ("adam", "bfgs"):
            raise CalibrationError(f"optimizer must be 'adam' (optax) or 'bfgs' (optimistix), not {self.optimizer!r}")
        if self.window < 30:
            raise CalibrationError("window must be at least 30 minutes")
        if not 0.0 < self.validation < 0.5:
            raise CalibrationError("validation must be a fraction between 0 and 0.5 of the record")
        if self.starts < 1:
            raise CalibrationError("starts must be >= 1")


@dataclass
class FitResult:
    """Everything a `Twin` keeps from a calibration."""

    z: np.ndarray  # fitted transformed parameters (final stage)
    z_mech: np.ndarray  # ... of the mechanistic stage
    noise: np.ndarray  # transformed noise parameters
    noise_mech: np.ndarray
    meal: np.ndarray  # log meal-size corrections, one per logged meal
    init: np.ndarray  # initial-state offsets (scaled)
    end_state: np.ndarray  # state at the end of the training part
    hybrid: Hybrid | None
    scale: np.ndarray | None = None  # typical size of each state (filter and shooting units)
    history: list[dict] = field(default_factory=list)
    diagnostics: dict = field(default_factory=dict)


# ------------------------------------------------------------------ problem setup
class _Problem(eqx.Module):
    """Arrays of one record cut into windows (all JAX arrays: one trace per shape)."""

    win: GridInputs  # [W, L, ...]
    win_t0: jax.Array  # [W]
    obs: jax.Array  # [W, L]
    prev: jax.Array
    gap: jax.Array
    val: GridInputs  # [V, ...]
    val_obs: jax.Array  # [V]
    meal_cols: jax.Array
    scale: jax.Array  # [S] typical state sizes
    base: jax.Array  # [W, S] window starts of the initial trajectory
    nonneg: jax.Array  # [S] bool
    day0: jax.Array
    n_obs: jax.Array


def _windows(record: Record, settings: FitSettings) -> tuple[int, int, int]:
    total = record.minutes
    n_val = max(360, int(round(total * settings.validation)))
    n_train = total - n_val
    L = settings.window
    W = n_train // L
    if W < 1:
        raise CalibrationError(f"{record.source}: {total} min of record leave {n_train} min to fit after holding out "
                               f"{n_val} min for validation; at least one {L}-min window is needed "
                               f"(give a longer record or a smaller --window)")
    return W, L, total - W * L


def _split_inputs(gi: GridInputs, W: int, L: int) -> tuple[GridInputs, GridInputs]:
    head = jax.tree_util.tree_map(lambda a: a[:W * L].reshape((W, L) + a.shape[1:]), gi)
    tail = jax.tree_util.tree_map(lambda a: a[W * L:], gi)
    return head, tail


def _meal_scaled(gi: GridInputs, meal: jax.Array, cols: jax.Array) -> GridInputs:
    factor = jnp.exp(jnp.concatenate([meal, jnp.zeros(1)]))[gi.meal]  # meal index -1 -> factor 1
    v = gi.values * jnp.where(cols, factor[..., None], 1.0)  # cols: bool per signal
    return GridInputs(v, gi.reset, gi.meal)


# ------------------------------------------------------------------ the field
def _field(model: Model, theta, hybrid: Hybrid | None, day0):
    if hybrid is None:
        def f(t, y, u):
            return model.evaluate(t, y, theta, u)[0]
    else:
        def f(t, y, u):
            return hybrid.evaluate(t, y, theta, u, day0)[0]

    def reset(t, y, u, mask):
        return model.reset(t, y, theta, u, mask) if any(model.reset_columns) else y

    return f, reset


def _observe(model: Model, theta, hybrid: Hybrid | None, day0, out_col: int):
    def observe(t, y, u):
        if hybrid is None:
            _, outs = model.evaluate(t, y, theta, u)
            return jnp.concatenate([outs[out_col][None], y])
        _, outs, r = hybrid.evaluate(t, y, theta, u, day0)
        return jnp.concatenate([outs[out_col][None], y, r])
    return observe


def run_windows(model, hybrid, theta, y_starts, win: GridInputs, t0s, day0, out_col, n_sub):
    """Integrate every window from its start: ``(y_end[W,S], observed[W,L,...])``."""
    f, reset = _field(model, theta, hybrid, day0)
    observe = _observe(model, theta, hybrid, day0, out_col)

    def one(y0, gi, t0):
        return integrate(f, reset, y0, gi, t0, n_sub, observe)

    return jax.vmap(one)(y_starts, win, t0s)


def simulate_grid(model, hybrid, theta, y0, gi: GridInputs, t0, day0, out_col, n_sub):
    """One free run over ``gi``: ``(y_end, observed[K, 1 + S (+ slots)])``."""
    f, reset = _field(model, theta, hybrid, day0)
    return integrate(f, reset, y0, gi, t0, n_sub, _observe(model, theta, hybrid, day0, out_col))


# ------------------------------------------------------------------ calibration
class _Calibration(eqx.Module):
    model: Model = eqx.field(static=True)
    obs_model: ObservationModel = eqx.field(static=True)
    space: ParameterSpace = eqx.field(static=True)
    settings: FitSettings = eqx.field(static=True)
    out_col: int = eqx.field(static=True)
    n_sub: int = eqx.field(static=True)
    noise_mu: tuple[float, ...] = eqx.field(static=True)
    noise_kind: tuple = eqx.field(static=True)

    def noise(self, zn):
        from .space import _inverse

        kind = jnp.asarray([k for k, _, _ in self.noise_kind])
        lo = jnp.asarray([lo for _, lo, _ in self.noise_kind])
        hi = jnp.asarray([hi for _, _, hi in self.noise_kind])
        values = _inverse(kind, lo, hi, zn)
        return {p.name: values[i] for i, p in enumerate(self.obs_model.params)}

    def starts(self, params, prob: _Problem, theta):
        y0 = self.model.initial_state(theta, prob.win.values[0, 0]) \
            + prob.scale * params["init"]
        rest = prob.base[1:] + prob.scale * params["shoot"]
        ys = jnp.concatenate([y0[None], rest], axis=0)
        return jnp.where(prob.nonneg, jnp.maximum(ys, 0.0), ys)

    def loss(self, params, hybrid, prob: _Problem):
        """Negative log posterior per reading, and its parts."""
        theta = self.space.theta(params["z"])
        win = _meal_scaled(prob.win, params["meal"], prob.meal_cols)
        ys = self.starts(params, prob, theta)
        y_end, observed = run_windows(self.model, hybrid, theta, ys, win, prob.win_t0, prob.day0, self.out_col,
                                      self.n_sub)
        pred = observed[..., 0]
        mask = jnp.isfinite(prob.obs)
        noise = self.noise(params["noise"])
        nll = jnp.sum(jax.vmap(lambda p, o, m, pv, g: self.obs_model.nll(p, jnp.where(m, o, 0.0), m, pv, g, noise))(
            pred, prob.obs, mask, prob.prev, prob.gap))
        prior = (self.space.prior(params["z"]) + 0.5 * jnp.sum((params["meal"] / self.settings.meal_sd) ** 2)
                 + 0.5 * jnp.sum((params["init"] / self.settings.init_sd) ** 2)
                 + 0.5 * jnp.sum((params["noise"] - jnp.asarray(self.noise_mu)) ** 2))
        defect = (y_end[:-1] - ys[1:]) / (prob.scale * self.settings.continuity)
        continuity = 0.5 * jnp.sum(defect ** 2)
        total = nll + prior + continuity
        penalty = jnp.zeros(())
        if hybrid is not None and hybrid.slots:
            r = observed[..., 1 + len(self.model.state_names):]
            scales = jnp.asarray([s.scale for s in hybrid.slots])
            penalty = (self.settings.residual_weight * jnp.mean((r / scales) ** 2) * prob.n_obs
                       + self.settings.l2 * hybrid.l2())
            total = total + penalty
        sse = jnp.sum(jnp.where(mask, prob.obs - pred, 0.0) ** 2)
        parts = {"nll": nll, "prior": prior, "continuity": continuity, "penalty": penalty,
                 "train_rmse": jnp.sqrt(sse / prob.n_obs)}
        return total / prob.n_obs, parts

    def validate(self, params, hybrid, prob: _Problem):
        """RMSE of the free run over the held-out part, from the end of the last window."""
        theta = self.space.theta(params["z"])
        win = _meal_scaled(prob.win, params["meal"], prob.meal_cols)
        ys = self.starts(params, prob, theta)
        y_end, _ = run_windows(self.model, hybrid, theta, ys, win, prob.win_t0, prob.day0, self.out_col, self.n_sub)
        val = _meal_scaled(prob.val, params["meal"], prob.meal_cols)
        t0 = prob.win_t0[-1] + prob.win.values.shape[1]
        y_val_end, observed = simulate_grid(self.model, hybrid, theta, y_end[-1], val, t0, prob.day0, self.out_col,
                                            self.n_sub)
        pred = observed[:, 0]
        mask = jnp.isfinite(prob.val_obs)
        n = jnp.maximum(jnp.sum(mask), 1)
        rmse = jnp.sqrt(jnp.sum(jnp.where(mask, prob.val_obs - pred, 0.0) ** 2) / n)
        return rmse, y_end[-1], y_val_end


def _problem(model, record: Record, settings: FitSettings, space: ParameterSpace, out_col: int, n_sub: int):
    W, L, V = _windows(record, settings)
    win, val = _split_inputs(record.inputs, W, L)
    obs = record.obs[:W * L].reshape(W, L)
    prev, gap = previous_reading(obs)
    meal_cols = [n.split(".", 1)[-1] in MEAL_SIGNALS for n in model.signal_names]
    # the trajectory of the population model gives each window a first start and each state a size
    theta0 = jnp.asarray(space.base)
    y0 = model.initial_state(theta0, record.inputs.values[0])
    dummy = _Problem(win, jnp.arange(W) * float(L), jnp.asarray(obs), jnp.asarray(prev), jnp.asarray(gap), val,
                     jnp.asarray(record.obs[W * L:]), jnp.asarray(meal_cols, dtype=bool),
                     jnp.ones(len(model.state_names)), jnp.zeros((W, len(model.state_names))),
                     jnp.zeros(len(model.state_names), bool), jnp.asarray(record.day0),
                     jnp.asarray(float(np.isfinite(obs).sum())))
    _, traj = eqx.filter_jit(simulate_grid)(
        model, None, theta0, y0, record.inputs, jnp.asarray(0.0), dummy.day0, out_col, n_sub)
    traj = np.asarray(traj)[:, 1:1 + len(model.state_names)]
    states = np.concatenate([np.asarray(y0)[None], traj])
    rms = np.sqrt(np.mean(states ** 2, axis=0))
    decl_scale = np.asarray(model.state_scales)
    scale = np.where(rms > 1e-12, rms, decl_scale)  # a state that stays 0 (exercise) keeps its declared size
    base = states[np.arange(W) * L]
    nonneg = np.array([model.declaration(n).nonnegative for n in model.state_names])
    if not np.isfinite(obs).any():
        raise CalibrationError(f"{record.source}: no readings fall in the fitted part of the record "
                               f"(the first {W * L} min)")
    return eqx.tree_at(lambda p: (p.scale, p.base, p.nonneg), dummy,
                       (jnp.asarray(scale), jnp.asarray(base), jnp.asarray(nonneg))), (W, L, V)


def _on_devices(fn, n_starts: int):
    """Run ``fn`` (vmapped over multistart runs) on every local CPU device in parallel, each on
    its share of the runs, when they divide evenly (the CLI makes one device per core). The
    runs are independent; each device gets its own thread (JAX releases the GIL)."""
    devices = jax.local_devices()
    if len(devices) < 2 or n_starts % len(devices) or n_starts < 2:
        return fn
    from concurrent.futures import ThreadPoolExecutor

    k = n_starts // len(devices)

    def run(params):
        parts = [jax.device_put(jax.tree_util.tree_map(lambda a: a[i * k:(i + 1) * k], params), d)
                 for i, d in enumerate(devices)]
        with ThreadPoolExecutor(len(devices)) as pool:
            outs = list(pool.map(lambda p: jax.block_until_ready(fn(p)), parts))
        outs = [jax.device_put(o, devices[0]) for o in outs]
        return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *outs)

    return run


def _progress(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, leave=False)


def _adam_stage(cal: _Calibration, params, hybrid, prob, steps, desc, history, stage, train_nets):
    """Adam over the (batched over starts) mechanistic params, and the nets when training a hybrid,
    with early stopping on validation RMSE. Returns (best params, best hybrid, best val rmse per start)."""
    s = cal.settings
    if train_nets:
        nets_p, nets_static = eqx.partition(hybrid, eqx.is_inexact_array)
    else:
        nets_p, nets_static = None, hybrid
    opt = optax.adam(s.lr)
    opt_net = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(s.net_lr))
    state = opt.init(params)
    state_net = opt_net.init(nets_p) if train_nets else None

    def batched_loss(params, nets_p):
        h = eqx.combine(nets_p, nets_static) if train_nets else nets_static
        losses, parts = jax.vmap(lambda p: cal.loss(p, h, prob))(params)
        return jnp.sum(losses), (losses, parts)

    @jax.jit
    def update(params, nets_p, state, state_net):
        (_, (losses, parts)), grads = jax.value_and_grad(batched_loss, argnums=(0, 1), has_aux=True)(params, nets_p)
        upd, state = opt.update(grads[0], state, params)
        params = optax.apply_updates(params, upd)
        if train_nets:
            upd_n, state_net = opt_net.update(grads[1], state_net, nets_p)
            nets_p = optax.apply_updates(nets_p, upd_n)
        return params, nets_p, state, state_net, losses, parts

    @jax.jit
    def validate(params, nets_p):
        h = eqx.combine(nets_p, nets_static) if train_nets else nets_static
        return jax.vmap(lambda p: cal.validate(p, h, prob)[0])(params)

    best_val = np.asarray(validate(params, nets_p))
    best, best_nets = params, nets_p
    stale = 0
    bar = _progress(steps, desc, s.progress)
    for it in range(1, steps + 1):
        params, nets_p, state, state_net, losses, parts = update(params, nets_p, state, state_net)
        if bar is not None:
            bar.update(1)
        if it % s.check_every == 0 or it == steps:
            val = np.asarray(validate(params, nets_p))
            losses_np = np.asarray(losses)
            if not np.all(np.isfinite(losses_np)):
                bad = ~np.isfinite(losses_np)
                val = np.where(bad, np.inf, val)
            improved = val < best_val * (1.0 - s.min_improvement)
            sel = jnp.asarray(improved)
            best = jax.tree_util.tree_map(
                lambda b, p: jnp.where(sel.reshape((-1,) + (1,) * (p.ndim - 1)), p, b), best, params)
            if train_nets and bool(improved[0]):
                best_nets = nets_p
            best_val = np.where(improved, val, best_val)
            history.append({"stage": stage, "iteration": it, "loss": losses_np.tolist(),
                            "train_rmse": np.asarray(parts["train_rmse"]).tolist(), "validation_rmse": val.tolist()})
            if bar is not None:
                bar.set_postfix(train=f"{float(np.min(np.asarray(parts['train_rmse']))):.1f}",
                                val=f"{float(np.min(best_val)):.1f}")
            stale = 0 if improved.any() else stale + 1
            if stale >= s.patience:
                break
    if bar is not None:
        bar.close()
    hyb = eqx.combine(best_nets, nets_static) if train_nets else hybrid
    return best, hyb, best_val


def _bfgs_stage(cal: _Calibration, params, prob, history):
    """optimistix BFGS on every multistart run (no early stopping: BFGS converges; the
    validation RMSE chooses the run). The progress bar counts loss evaluations."""
    import threading

    import optimistix as optx

    n_dev = max(1, len(jax.local_devices())) if params["z"].shape[0] % max(1, len(jax.local_devices())) == 0 else 1
    bar = _progress(cal.settings.steps * n_dev, "mechanistic (BFGS)", cal.settings.progress)
    lock = threading.Lock()

    def tick():
        if bar is not None:
            with lock:
                if bar.n < bar.total:
                    bar.update(1)

    def fn(p, _):
        if bar is not None:
            jax.debug.callback(tick)
        return cal.loss(p, None, prob)[0]

    solver = optx.BFGS(rtol=1e-6, atol=1e-6)

    @jax.jit
    def solve_all(params):
        def one(p):
            sol = optx.minimise(fn, solver, p, max_steps=cal.settings.steps, throw=False)
            return sol.value, sol.stats["num_steps"]
        return jax.vmap(one)(params)

    solve = _on_devices(solve_all, params["z"].shape[0])
    best, steps = solve(params)
    if bar is not None:
        bar.close()
    val = np.asarray(jax.jit(jax.vmap(lambda p: cal.validate(p, None, prob)[0]))(best))
    history.append({"stage": "mechanistic", "iteration": np.asarray(steps).tolist(), "validation_rmse": val.tolist()})
    return best, np.where(np.isfinite(val), val, np.inf)


def fit_record(model: Model, record: Record, obs_model: ObservationModel, space: ParameterSpace,
               settings: FitSettings, hybrid: bool) -> FitResult:
    """Calibrate ``model`` to ``record``; see the module docstring."""
    t_start = time.perf_counter()
    out_col = model.output_names.index(obs_model.output_name(model))
    n_sub = substeps(model)
    prob, (W, L, V) = _problem(model, record, settings, space, out_col, n_sub)
    from .space import _KIND, _forward

    noise_kind = tuple((_KIND[p.transform], p.lower, p.upper) for p in obs_model.params)
    noise_mu = tuple(float(_forward(np.array(k), np.array(lo), np.array(hi), np.array(p.value)))
                     for (k, lo, hi), p in zip(noise_kind, obs_model.params))
    cal = _Calibration(model, obs_model, space, settings, out_col, n_sub, noise_mu, noise_kind)
    n_unknown = len(space.names) + record.n_meals + len(model.state_names) + len(obs_model.params)
    n_obs = int(np.isfinite(record.obs[:W * L]).sum())
    if n_obs < n_unknown:
        raise CalibrationError(f"{record.source}: {n_obs} readings in the fitted part, fewer than the {n_unknown} "
                               f"values to estimate ({len(space.names)} parameters, {record.n_meals} meal corrections, "
                               f"{len(model.state_names)} initial states, {len(obs_model.params)} noise parameters)")

    # multistart: the prior centre, then draws from the prior
    rng = np.random.default_rng(settings.seed)
    S = settings.starts
    z0 = np.tile(space.mu, (S, 1))
    if S > 1:
        z0[1:] += rng.standard_normal((S - 1, len(space.mu))) * space.sd
    # meal corrections padded to a multiple of 16 (unused ones stay at their prior, 0), so that
    # records of similar length share compiled code
    n_meal = 16 * max(1, -(-record.n_meals // 16))
    params = {
        "z": jnp.asarray(z0),
        "meal": jnp.zeros((S, n_meal)),
        "init": jnp.zeros((S, len(model.state_names))),
        "shoot": jnp.zeros((S, W - 1, len(model.state_names))),
        "noise": jnp.tile(jnp.asarray(noise_mu), (S, 1)),
    }
    history: list[dict] = []
    if settings.optimizer == "bfgs":
        best, val = _bfgs_stage(cal, params, prob, history)
    else:
        best, _, val = _adam_stage(cal, params, None, prob, settings.steps, "mechanistic", history, "mechanistic",
                                   False)
    k = int(np.argmin(val))
    mech = jax.tree_util.tree_map(lambda a: a[k], best)
    mech_val = float(val[k])

    net = None
    final, final_val = mech, mech_val
    if hybrid:
        theta = space.theta(mech["z"])
        win = _meal_scaled(prob.win, mech["meal"], prob.meal_cols)
        _, obs_w = eqx.filter_jit(run_windows)(
            model, None, theta, cal.starts(mech, prob, theta), win, prob.win_t0, prob.day0, out_col, n_sub)
        ys = np.asarray(obs_w)[..., 1:].reshape(-1, len(model.state_names))
        outs = np.asarray(jax.jit(jax.vmap(lambda y, u: model.evaluate(0.0, y, theta, u)[1]))(
            jnp.asarray(ys), win.values.reshape(-1, win.values.shape[-1])))
        net = Hybrid.create(model, jax.random.PRNGKey(settings.seed), settings.width, settings.depth, ys, outs)
        if not net.slots:
            raise CalibrationError(f"no organ in the composition ({', '.join(model.organ_names)}) declares a "
                                   f"residual slot: use --no-hybrid")
        batched = jax.tree_util.tree_map(lambda a: a[None], mech)
        best_h, net, val_h = _adam_stage(cal, batched, net, prob, settings.hybrid_steps, "hybrid", history,
                                         "hybrid", True)
        final = jax.tree_util.tree_map(lambda a: a[0], best_h)
        final_val = float(val_h[0])

    # diagnostics of the final fit
    _, parts = eqx.filter_jit(lambda p, h: cal.loss(p, h, prob))(final, net)
    _, _, end_state = eqx.filter_jit(lambda p, h: cal.validate(p, h, prob))(final, net)
    theta = space.theta(final["z"])
    win = _meal_scaled(prob.win, final["meal"], prob.meal_cols)
    y_end, observed = eqx.filter_jit(run_windows)(
        model, net, theta, cal.starts(final, prob, theta), win, prob.win_t0, prob.day0, out_col, n_sub)
    diag = {
        "windows": W, "window_minutes": L, "validation_minutes": V, "train_readings": n_obs,
        "validation_readings": int(np.isfinite(record.obs[W * L:]).sum()),
        "train_rmse": float(parts["train_rmse"]), "validation_rmse": final_val,
        "mechanistic_validation_rmse": mech_val, "multistart_validation_rmse": [float(v) for v in val],
        "chosen_start": k,
        "continuity_defect_rms": float(np.sqrt(np.mean(((np.asarray(y_end[:-1]) - np.asarray(
            cal.starts(final, prob, theta)[1:])) / np.asarray(prob.scale)) ** 2))) if W > 1 else 0.0,
        "noise": {p: float(v) for p, v in cal.noise(final["noise"]).items()},
        "seconds": time.perf_counter() - t_start,
    }
    if net is not None:
        obs_np = np.asarray(observed)
        S_ = len(model.state_names)
        r = obs_np[..., 1 + S_:].reshape(-1, len(net.slots))
        dmech = []
        ys = obs_np[..., 1:1 + S_].reshape(-1, S_)
        uu = win.values.reshape(-1, win.values.shape[-1])
        dy = np.asarray(jax.jit(jax.vmap(lambda y, u: model.evaluate(0.0, y, theta, u)[0]))(jnp.asarray(ys), uu))
        for i, slot in enumerate(net.slots):
            dmech.append(dy[:, slot.state])
        diag["residual_share"] = {
            slot.name: float(np.sqrt(np.mean(r[:, i] ** 2)) / max(np.sqrt(np.mean((dmech[i] + r[:, i]) ** 2)), 1e-12))
            for i, slot in enumerate(net.slots)}
    return FitResult(
        z=np.asarray(final["z"]), z_mech=np.asarray(mech["z"]), noise=np.asarray(final["noise"]),
        noise_mech=np.asarray(mech["noise"]), meal=np.asarray(final["meal"])[:record.n_meals], init=np.asarray(final["init"]),
        end_state=np.asarray(end_state), hybrid=net, scale=np.asarray(prob.scale), history=history,
        diagnostics=diag)

