"""The optimisers of a calibration, over a batch of multistart runs.

- `bfgs_stage`: optimistix BFGS on every multistart run of the mechanistic stage (no
  early stopping: BFGS converges; the validation score chooses the run);
- `adam_stage`: optax Adam over the mechanistic unknowns and, for a hybrid, the
  residual networks, with early stopping on the validation score.

The runs are independent; `on_devices` spreads them over the local CPU devices.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .objective import Objective, fit_arrays

__all__ = ["on_devices", "progress", "adam_stage", "bfgs_stage"]


def on_devices(fn, n_starts: int):
    """Run ``fn`` (a function vmapped over multistart runs) with the runs split over the local
    CPU devices when they divide evenly (the CLI makes one device per core): one program,
    compiled once and partitioned over the devices (GSPMD), each device running its share."""
    devices = jax.local_devices()
    if len(devices) < 2 or n_starts % len(devices) or n_starts < 2:
        return jax.jit(fn)
    mesh = jax.sharding.Mesh(np.array(devices), ("start",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("start"))
    compiled = jax.jit(fn, in_shardings=(sharding,), out_shardings=sharding)
    home = jax.sharding.SingleDeviceSharding(devices[0])

    def run(params):
        return jax.device_put(compiled(jax.device_put(params, sharding)), home)

    return run


def progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm  # a dependency: a missing one is an error, not a silent lack of progress

    return tqdm(total=total, desc=desc, leave=False)


def trainable(hybrid, what) -> tuple:
    """``(trained, fixed)`` parts of a hybrid: every array (``what=True``) or only the
    conditioning vector (``what="conditioning"``: a population's shared networks stay fixed)."""
    if what == "conditioning":
        spec = jax.tree_util.tree_map(lambda _: False, hybrid)
        return eqx.partition(hybrid, eqx.tree_at(lambda h: h.cond, spec, replace=True))
    return eqx.partition(hybrid, eqx.is_inexact_array)


def _adam_programs(cal: Objective, prob, hybrid, train_nets):
    """The jitted Adam update and validation of a stage, and its optimiser states' init."""
    s = cal.settings
    if train_nets:
        nets_p, nets_static = trainable(hybrid, train_nets)
    else:
        nets_p, nets_static = None, hybrid
    opt = optax.adam(s.hybrid_lr if train_nets else s.lr)
    opt_net = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(s.net_lr))

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

    def init(params):
        return opt.init(params), (opt_net.init(nets_p) if train_nets else None)

    return update, validate, init, nets_p, nets_static


def adam_stage(cal: Objective, params, hybrid, prob, steps, desc, history, stage, train_nets):
    """Adam over the (batched over starts) mechanistic unknowns, and the nets when training a
    hybrid (``train_nets``: `True`, or ``"conditioning"`` for only the conditioning vector),
    with early stopping on the validation score. Returns ``(best params, best hybrid,
    best validation score per start, any non-finite loss seen)``."""
    s = cal.settings
    update, validate, init, nets_p, nets_static = _adam_programs(cal, prob, hybrid, train_nets)
    state, state_net = init(params)
    best_val = np.asarray(validate(params, nets_p))
    best, best_nets = params, nets_p
    stale, diverged = 0, False
    bar = progress(steps, desc, s.progress)
    for it in range(1, steps + 1):
        params, nets_p, state, state_net, losses, parts = update(params, nets_p, state, state_net)
        if bar is not None:
            bar.update(1)
        if it % s.check_every and it != steps:
            continue
        val = np.asarray(validate(params, nets_p))
        losses_np = np.asarray(losses)
        bad = ~np.isfinite(losses_np)
        diverged |= bool(bad.any())
        val = np.where(bad | ~np.isfinite(val), np.inf, val)
        improved = val < best_val * (1.0 - s.min_improvement)
        sel = jnp.asarray(improved)
        best = jax.tree_util.tree_map(lambda b, p: jnp.where(sel.reshape((-1,) + (1,) * (p.ndim - 1)), p, b),
                                      best, params)
        if train_nets and bool(improved[0]):
            best_nets = nets_p
        best_val = np.where(improved, val, best_val)
        history.append({"stage": stage, "iteration": it, "loss": losses_np.tolist(),
                        "train_rmse": np.asarray(parts["train_rmse"]).tolist(), "validation_score": val.tolist()})
        if bar is not None:
            bar.set_postfix(val=f"{float(np.min(best_val)):.3g}")
        stale = 0 if improved.any() else stale + 1
        if stale >= s.patience or bad.all():
            break
    if bar is not None:
        bar.close()
    hyb = eqx.combine(best_nets, nets_static) if train_nets else hybrid
    return best, hyb, best_val, diverged


def bfgs_stage(cal: Objective, params, prob, history, z_scale=None):
    # z_scale: a [nz] diagonal or a [nz, nz] matrix T; BFGS works on u with z = T u
    """optimistix BFGS on every multistart run (no early stopping: BFGS converges; the
    validation score chooses the run). The progress bar counts loss evaluations.

    ``z_scale``: the fitted parameters are optimised as ``z / z_scale`` (a diagonal
    preconditioner: parameters whose curvature differs by orders of magnitude otherwise
    leave BFGS's first steps all to the steepest ones)."""
    import threading

    import optimistix as optx

    bar = progress(cal.settings.steps * params["z"].shape[0], "mechanistic (BFGS)", cal.settings.progress)
    lock = threading.Lock()

    def tick():
        if bar is not None:
            with lock:
                if bar.n < bar.total:
                    bar.update(1)

    nz = params["z"].shape[1]
    T = jnp.eye(nz) if z_scale is None else jnp.asarray(z_scale)
    T = jnp.diag(T) if T.ndim == 1 else T
    T_inv = jnp.linalg.inv(T)

    def fn(p, _):
        if bar is not None:
            jax.debug.callback(tick)
        return cal.loss({**p, "z": T @ p["z"]}, None, prob)[0]

    solver = optx.BFGS(rtol=1e-6, atol=1e-6)

    def solve_all(params):
        def one(p):
            sol = optx.minimise(fn, solver, p, max_steps=cal.settings.steps, throw=False)
            return sol.value, sol.stats["num_steps"], sol.result == optx.RESULTS.successful
        return jax.vmap(one)(params)

    solve = on_devices(solve_all, params["z"].shape[0])
    best, steps, converged = solve({**params, "z": params["z"] @ T_inv.T})
    best = {**best, "z": best["z"] @ T.T}
    if bar is not None:
        bar.close()
    val = np.array([float(fit_arrays(cal, prob, jax.tree_util.tree_map(lambda a: a[i], best), None)["score"])
                    for i in range(best["z"].shape[0])])
    history.append({"stage": "mechanistic", "iteration": np.asarray(steps).tolist(),
                    "converged": np.asarray(converged).tolist(), "validation_score": val.tolist()})
    return best, np.where(np.isfinite(val), val, np.inf)
