"""Population hybrids: residual networks shared by many patients, conditioned per patient.

One set of residual networks is trained on the records of many patients at once; each
patient keeps their own mechanistic parameters, input corrections, window starts and
error parameters, and has a low-dimensional *conditioning vector* ``c`` (standard normal
prior) that every network sees beside its features and the clock. This is the
population form of the universal differential equation (de Rooij et al., npj Syst Biol
Appl 2025: one network, an individual parameter per subject; DeepPumas is the commercial
equivalent). A new patient is then calibrated with the networks fixed: only their own
parameters and ``c`` are fitted (`calibrate(..., shared=POP_DIR)`), which needs far less
data than training networks of their own.

`calibrate_population` works in two stages:

1. every patient's mechanistic calibration, in parallel worker processes over the local
   cores (each as `calibrate(..., hybrid=False)`; the twins are saved under
   ``POP_DIR/patients/<name>``);
2. the shared networks and the conditioning vectors, with every patient's mechanistic
   unknowns, by Adam on the sum of the patients' losses (the per-patient objective of
   `physiotwin.calibration.objective`, vmapped over patients; a random minibatch of
   patients per step), stopped early on the patients' mean validation score.

The records must have the same length, observation kinds and input corrections (their
arrays are stacked). A population directory holds ``population.json`` (settings,
patients, conditioning vectors, history, checksums) and ``networks.eqx``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..composer import compose
from ..errors import CalibrationError
from .data import observed_kinds, prepare_record
from .fit import mechanistic_trajectory, prepare_fit
from .hybrid import Hybrid, slots_of
from .optimize import progress
from .settings import FitSettings
from .shared import POP_FORMAT, Population
from .store import json_default, move_into_place, sha

__all__ = ["calibrate_population"]

# ---------------------------------------------------------------- stage 1: per-patient mechanisms
def _worker_setup(cache: str | None) -> None:
    import warnings

    warnings.simplefilter("ignore")
    jax.config.update("jax_enable_x64", True)
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def _mechanistic_job(path: str, organs, settings: dict, noise: str, out: str) -> dict:
    from .twin import calibrate

    twin = calibrate(path, organs, hybrid=False, noise=noise, settings=FitSettings(**settings))
    twin.save(out)
    return {"unknowns": twin.result.unknowns, "space": twin.space, "organs": twin.organs,
            "seconds": twin.result.diagnostics.get("seconds")}


def _mechanisms(records: Sequence[str], names, organs, settings: FitSettings, noise, out: Path, workers: int):
    jobs = [(str(r), organs, asdict(settings), noise, str(out / "patients" / n)) for r, n in zip(records, names)]
    if workers <= 1:
        return [_mechanistic_job(*j) for j in jobs]
    cache = jax.config.jax_compilation_cache_dir
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_setup, initargs=(cache,)) as ex:
        futures = [ex.submit(_mechanistic_job, *j) for j in jobs]
        return [f.result() for f in futures]


# ---------------------------------------------------------------- stage 2: shared networks
def _problems(records, names, organs, noise, settings: FitSettings, fits):
    """The objective, and each patient's problem and unknowns (from their mechanistic
    fit), checked to be stackable."""
    from ..registry import corrections
    from .twin import observation_models_for, read_record

    model = compose(organs)
    cals, probs, shapes = [], [], []
    recs = []
    for path, name, fit in zip(records, names, fits):
        tl, source = read_record(path)
        observations = observation_models_for(model, observed_kinds(tl), source, {"noise": noise})
        recs.append((prepare_record(model, tl, observations, [c() for c in corrections().values()], source),
                     observations, fit))
    # every patient's input corrections padded to the same number of events
    pads = {}
    for rec, _, _ in recs:
        for c in rec.corrections:
            pads[c.name] = max(pads.get(c.name, 0), c.n_padded)
    params = []
    for (rec, observations, fit), name in zip(recs, names):
        rec = replace(rec, corrections=tuple(replace(c, n_padded=pads[c.name]) for c in rec.corrections))
        cal, prob, shape, _ = prepare_fit(model, rec, observations, fit["space"], settings)
        unknowns = _padded_unknowns(fit, pads, [c.name for c in rec.corrections])
        cals.append(cal)
        probs.append(prob)
        params.append(unknowns)
        shapes.append((shape, tuple(c.name for c in rec.corrections), tuple(om.kind for om in observations),
                       tuple(fit["space"].names)))
    for name, sh in zip(names[1:], shapes[1:]):
        if sh != shapes[0]:
            raise CalibrationError(f"{name}: its record cannot be trained together with {names[0]}'s "
                                   f"(windows {sh[0]} vs {shapes[0][0]}, corrections {sh[1]} vs {shapes[0][1]}, "
                                   f"kinds {sh[2]} vs {shapes[0][2]}, fitted {len(sh[3])} vs {len(shapes[0][3])} "
                                   f"parameters): give records of the same length and kinds")
    return model, cals[0], probs, params


def _check_stackable(records: Sequence[str]) -> None:
    """Same length and observation kinds, checked before any work starts."""
    from .data import record_minutes
    from .twin import read_record

    first = None
    for path in records:
        tl, source = read_record(path)
        key = (record_minutes(tl), tuple(observed_kinds(tl)))
        if first is None:
            first = (key, source)
        elif key != first[0]:
            raise CalibrationError(f"{source}: {key[0]} min with readings of {', '.join(key[1])}, but "
                                   f"{first[1]} has {first[0][0]} min with {', '.join(first[0][1])}: a population "
                                   f"is trained on records of the same length and kinds")


def _padded_unknowns(fit: dict, pads: dict, names_corr) -> dict:
    u = fit["unknowns"]
    corr = tuple(np.pad(np.asarray(c), (0, pads[n] - len(c))) for c, n in zip(u["corr"], names_corr))
    return {"z": np.asarray(u["z"]), "corr": corr, "init": np.asarray(u["init"]), "shoot": np.asarray(u["shoot"]),
            "errors": np.asarray(u["errors"])}


def _train(cal, probs, params, net: Hybrid, settings: FitSettings, steps: int, batch: int, seed: int, history: list):
    """Adam on the shared nets, the conditioning vectors and every patient's unknowns."""
    P, k = len(probs), net.cond.shape[0]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *probs)
    nets_p, nets_static = eqx.partition(net, eqx.is_inexact_array)
    conds = jnp.zeros((P, k))
    opt_m, opt_c = optax.adam(settings.hybrid_lr), optax.adam(settings.net_lr)
    opt_n = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(settings.net_lr))

    def losses(params, nets_p, conds, probs):
        h = eqx.combine(nets_p, nets_static)
        return jax.vmap(lambda p, c, pr: cal.loss(p, h.with_conditioning(c), pr)[0])(params, conds, probs)

    @jax.jit
    def update(params, nets_p, conds, states, idx, stacked):
        take = lambda t: jax.tree_util.tree_map(lambda a: a[idx], t)  # noqa: E731

        def total(sub_params, nets_p, sub_conds):
            return jnp.sum(losses(sub_params, nets_p, sub_conds, take(stacked))) * (P / idx.shape[0])

        loss, (g_p, g_n, g_c) = jax.value_and_grad(total, argnums=(0, 1, 2))(take(params), nets_p, conds[idx])
        full_p = jax.tree_util.tree_map(lambda z, g: z.at[idx].set(g), jax.tree_util.tree_map(jnp.zeros_like, params),
                                        g_p)
        full_c = jnp.zeros_like(conds).at[idx].set(g_c)
        s_m, s_n, s_c = states
        u_m, s_m = opt_m.update(full_p, s_m, params)
        u_n, s_n = opt_n.update(g_n, s_n, nets_p)
        u_c, s_c = opt_c.update(full_c, s_c, conds)
        return (optax.apply_updates(params, u_m), optax.apply_updates(nets_p, u_n), optax.apply_updates(conds, u_c),
                (s_m, s_n, s_c), loss)

    @jax.jit
    def validate(params, nets_p, conds, stacked):
        h = eqx.combine(nets_p, nets_static)
        return jax.vmap(lambda p, c, pr: cal.validate(p, h.with_conditioning(c), pr)[0])(params, conds, stacked)

    states = (opt_m.init(params), opt_n.init(nets_p), opt_c.init(conds))
    rng = np.random.default_rng(seed)
    best = (params, nets_p, conds)
    best_val = float(np.mean(np.asarray(validate(params, nets_p, conds, stacked))))
    history.append({"stage": "population", "iteration": 0, "validation_score": best_val})
    stale = 0
    bar = progress(steps, "population", settings.progress)
    for it in range(1, steps + 1):
        idx = jnp.asarray(rng.permutation(P)[:batch])
        params, nets_p, conds, states, loss = update(params, nets_p, conds, states, idx, stacked)
        if bar is not None:
            bar.update(1)
        if it % settings.check_every and it != steps:
            continue
        val = np.asarray(validate(params, nets_p, conds, stacked))
        score = float(np.mean(np.where(np.isfinite(val), val, np.inf)))
        history.append({"stage": "population", "iteration": it, "loss": float(loss), "validation_score": score,
                        "validation_per_patient": val.tolist()})
        if score < best_val * (1.0 - settings.min_improvement):
            best, best_val, stale = (params, nets_p, conds), score, 0
        else:
            stale += 1
        if bar is not None:
            bar.set_postfix(val=f"{best_val:.3g}")
        if stale >= settings.patience:
            break
    if bar is not None:
        bar.close()
    params, nets_p, conds = best
    return eqx.combine(nets_p, nets_static).with_conditioning(np.zeros(k)), np.asarray(conds), params, best_val


def calibrate_population(records: Sequence[str], out, organs: Sequence[str] | None = None, *, conditioning: int = 2,
                         seed: int = 0, workers: int | None = None, network_steps: int = 300, batch: int = 4,
                         noise: str = "ar1", settings: FitSettings | None = None, **options) -> Population:
    """Train residual networks shared by the patients of ``records`` (paths) and write them
    to ``out``; see the module docstring. ``workers``: processes for the mechanistic stage
    (default: one per core); ``network_steps``: Adam steps of the network stage; ``batch``: patients
    per step; ``conditioning``: length of each patient's conditioning vector."""
    from ..simulate import require_x64
    from .twin import default_organs, read_record

    require_x64()
    t0 = time.perf_counter()
    records = [str(r) for r in records]
    if len(records) < 2:
        raise CalibrationError("a population needs the records of at least 2 patients")
    if conditioning < 0:
        raise CalibrationError("conditioning must be >= 0")
    names = [Path(r).stem for r in records]
    if len(set(names)) < len(names):
        raise CalibrationError("two records have the same file name; a population names patients by their file")
    settings = FitSettings(seed=seed, **options) if settings is None else settings
    _check_stackable(records)
    if organs is None or not organs:
        tl, _ = read_record(records[0])
        organs = default_organs(observed_kinds(tl))
    model = compose(organs)
    slots_of(model, settings.slots or None)  # an unknown slot is refused before any work
    if settings.window is None:
        settings = replace(settings, window=int(max(o.shooting_window for o in model.organs)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # same file system as out
    try:
        fits = _mechanisms(records, names, list(organs), settings, noise, tmp,
                           workers or min(len(records), os.cpu_count() or 1))
        t_mech = time.perf_counter() - t0
        model, cal, probs, params = _problems(records, names, list(organs), noise, settings, fits)
        params = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *params)
        trajectories = [mechanistic_trajectory(cal, pr, jax.tree_util.tree_map(lambda a: a[i], params))
                        for i, pr in enumerate(probs)]
        ys = np.concatenate([t[0] for t in trajectories])
        outs = np.concatenate([t[1] for t in trajectories])
        net = Hybrid.create(model, jax.random.PRNGKey(seed), settings.width, settings.depth, ys, outs,
                            only=settings.slots or None, conditioning=conditioning)
        if not net.slots:
            raise CalibrationError(f"no organ of {list(organs)} declares a residual slot")
        history: list[dict] = []
        net, conds, _, best_val = _train(cal, probs, params, net, settings, network_steps,
                                         min(batch, len(records)), seed, history)
        observations = [(om.name, om.option_values()) for om in cal.observations]
        meta = {"format": POP_FORMAT, "organs": list(organs), "state_names": list(model.state_names),
                "observations": [{"name": n, "options": o} for n, o in observations], "spec": net.spec(),
                "settings": asdict(settings), "network_steps": network_steps, "batch": batch,
                "patients": [{"name": n, "record": r, "cond": c.tolist()} for n, r, c in zip(names, records, conds)],
                "validation_score": best_val, "history": history,
                "seconds": {"mechanistic": t_mech, "total": time.perf_counter() - t0}}
        eqx.tree_serialise_leaves(tmp / "networks.eqx", net)
        meta["files"] = {"networks.eqx": sha(tmp / "networks.eqx")}
        (tmp / "population.json").write_text(json.dumps(meta, indent=1, default=json_default))
        move_into_place(tmp, out, "population.json", "population")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Population(organs, observations, net, meta, out)
