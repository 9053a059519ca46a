"""Virtual populations: new patients drawn like a group of bundled ones.

`sample_population` draws ``n`` virtual patients whose parameters follow the spread of the
bundled patients whose name starts with ``like`` (``"adult"``: ``adult#001`` ... ``adult#010``),
and that every organ of the composition can start at rest. The method:

1. The group's parameters, as a patient table would set them (`physiotwin.patients.resolve_patients`:
   parameters without a column take the organ's nominal value).
2. Which are drawn: the parameters of scope ``"patient"`` that vary within the group and that
   their organ does not derive (`physiotwin.Organ.derived`). Every other parameter is copied:
   the group's common value (its median, for one of another scope that varies).
3. The distribution: a multivariate log-normal, i.e. the mean and covariance of the log values
   of the group (a parameter with a value <= 0 in the group is taken on its own scale: normal).
   A group has fewer patients (10) than drawn parameters (about 25), so the sample covariance is
   singular; it is shrunk towards its diagonal by the estimator of Schäfer & Strimmer (Stat Appl
   Genet Mol Biol 4:32, 2005; their target "D"): the variances are kept and every correlation is
   multiplied by ``1 - lambda``, with ``lambda = sum Var(r_ij) / sum r_ij^2`` over i != j, the
   estimated sampling variance of the correlations against their size (clipped to [0, 1]). For
   ``lambda > 0`` the result is positive definite. The report gives ``lambda`` as ``shrinkage``.
4. Draws: ``numpy.random.default_rng(seed)``, standard normals in row order (so a smaller ``n``
   gives a prefix of a larger one), in batches; each organ then computes its derived
   parameters from the drawn ones (`physiotwin.Organ.derive`).
5. Rejection, the first reason that applies: a parameter not finite, or outside its declared
   bounds (`physiotwin.Param` ``lower``/``upper``); or a start not at rest: the composed vector
   field at the organs' initial state (`physiotwin.Model.initial_state` at the inputs at rest)
   moves some state by more than ``physiotwin.steady.TOL`` of its size per day,
   ``|dy/dt| * 1440 / (|y| + 1)``; for coupled organs, where that point is not an equilibrium of
   the whole, `physiotwin.steady.settle` must find one. The check is one vmapped, jitted call
   per batch. Drawing stops at ``n`` accepted patients, or with a `PatientError` after
   ``MAX_DRAWS * n`` draws.

The table has a ``patient`` column (``f"{like}-virtual#{k:05d}"``, k from 1) and one column per
qualified parameter (``organ.param``), as `physiotwin.patients.table_params` reads it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from .composer import Model
from .errors import PatientError, PluginError
from .patients import bundled_patients, resolve_patients
from .signals import compile_signals
from .simulate import require_x64
from .steady import TOL, settle
from .timeline import Timeline

__all__ = ["sample_population", "rest_signals", "MAX_DRAWS", "MIN_GROUP"]

#: drawing gives up after this many draws per patient asked for
MAX_DRAWS = 20
#: the fewest bundled patients a distribution is fitted to
MIN_GROUP = 3


@dataclass(frozen=True)
class _Plan:
    """What is drawn (``sampled``: column indices into ``model.param_names``) and the row of
    copied values every draw starts from."""

    sampled: np.ndarray
    derived: tuple[str, ...]
    base: np.ndarray


@dataclass(frozen=True)
class _Fit:
    """The fitted distribution: ``z = mu + chol @ e`` with ``e`` standard normal, and
    ``x = exp(z)`` where ``logged``."""

    mu: np.ndarray
    chol: np.ndarray
    logged: np.ndarray
    shrinkage: float


def _group(like: str) -> list[str]:
    names = [str(n) for n in bundled_patients().index]
    chosen = [n for n in names if n.startswith(like)]
    if len(chosen) >= MIN_GROUP:
        return chosen
    prefixes = sorted({n.split("#", 1)[0] for n in names})
    counts = ", ".join(f"{p} ({sum(n.split('#', 1)[0] == p for n in names)})" for p in prefixes)
    found = "no bundled patient" if not chosen else f"only {len(chosen)} bundled patient(s) ({', '.join(chosen)})"
    raise PatientError(f"like={like!r}: {found} named so; a virtual population needs at least {MIN_GROUP}; "
                       f"bundled groups: {counts}")


def _plan(model: Model, theta: np.ndarray) -> _Plan:
    derived = tuple(f"{o.name}.{d}" for o in model.organs for d in o.derived)
    unknown = [q for q in derived if q not in model.param_names]
    if unknown:
        raise PluginError(f"derived parameters {unknown} are not parameters of their organ")
    spread = np.ptp(theta, axis=0)
    varies = spread > 1e-12 * np.maximum(np.abs(theta).max(axis=0), 1e-300)
    sampled = [j for j, q in enumerate(model.param_names)
               if varies[j] and q not in derived and model.declaration(q).scope == "patient"]
    return _Plan(np.asarray(sampled, dtype=int), derived, np.median(theta, axis=0))


def _shrunk_covariance(z: np.ndarray) -> tuple[np.ndarray, float]:
    """Covariance of the rows of ``z`` with its correlations shrunk towards zero
    (Schäfer & Strimmer 2005, target D); returns it and the shrinkage intensity."""
    m, k = z.shape
    sd = z.std(axis=0, ddof=1)
    x = (z - z.mean(axis=0)) / sd
    w = x[:, :, None] * x[:, None, :]  # [patient, i, j]
    r = w.sum(axis=0) / (m - 1)
    var_r = m / (m - 1) ** 3 * ((w - w.mean(axis=0)) ** 2).sum(axis=0)
    off = ~np.eye(k, dtype=bool)
    denom = float((r[off] ** 2).sum())
    lam = 1.0 if denom == 0.0 else float(np.clip(var_r[off].sum() / denom, 0.0, 1.0))
    shrunk = np.where(off, (1.0 - lam) * r, 1.0)
    return shrunk * np.outer(sd, sd), lam


def _fit(values: np.ndarray) -> _Fit:
    logged = np.all(values > 0.0, axis=0)
    z = np.where(logged, np.log(np.where(logged, values, 1.0)), values)
    k = z.shape[1]
    if k == 0:
        return _Fit(np.zeros(0), np.zeros((0, 0)), logged, 0.0)
    cov, lam = _shrunk_covariance(z)
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:  # (lambda = 0 with a singular covariance) a degenerate normal
        w, v = np.linalg.eigh(cov)
        chol = v * np.sqrt(np.clip(w, 0.0, None))
    return _Fit(z.mean(axis=0), chol, logged, lam)


def _draw(rng: np.random.Generator, fit: _Fit, plan: _Plan, size: int) -> np.ndarray:
    e = rng.standard_normal((size, len(fit.mu)))
    z = fit.mu + e @ fit.chol.T
    theta = np.tile(plan.base, (size, 1))
    theta[:, plan.sampled] = np.where(fit.logged, np.exp(z), z)
    return theta


def _derive(model: Model, theta: np.ndarray) -> np.ndarray:
    """Each organ's `Organ.derive` applied to the draws, in composition order."""
    theta = theta.copy()
    index = {q: j for j, q in enumerate(model.param_names)}
    for organ in model.organs:
        if not organ.derived:
            continue
        p = {d.name: theta[:, index[f"{organ.name}.{d.name}"]] for d in organ.params}
        with np.errstate(all="ignore"):
            out = organ.derive(p)
        if set(out) != set(organ.derived):
            raise PluginError(f"organ {organ.name!r}: derive() returned {sorted(out)}, "
                              f"its `derived` lists {sorted(organ.derived)}")
        for name, values in out.items():
            theta[:, index[f"{organ.name}.{name}"]] = np.broadcast_to(np.asarray(values, dtype=float), len(theta))
    return theta


@eqx.filter_jit
def _at_rest(model: Model, theta, rest):
    """Per draw: ``(at rest, worst state, its relative rate per day)``."""

    def one(th):
        y0 = model.initial_state(th, rest)
        if model.coupled:
            s = settle(model, th, rest, y0)
            return s.ok, s.worst, s.rate
        dy = model.evaluate(jnp.zeros((), th.dtype), y0, th, rest)[0]
        rate = jnp.abs(dy) * 1440.0 / (jnp.abs(y0) + 1.0)
        rate = jnp.where(jnp.isfinite(rate), rate, jnp.inf)
        worst = jnp.argmax(rate)
        return rate[worst] < TOL, worst, rate[worst]

    return jax.vmap(one)(theta)


def rest_signals(model: Model) -> np.ndarray:
    """The timeline signals of ``model`` at rest (a timeline without events)."""
    return compile_signals(Timeline.empty(), model.signal_names, 1.0)[1][0]


def _reasons(model: Model, theta: np.ndarray, rest: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Per draw, why it is rejected (the first reason), or None."""
    decls = [model.declaration(q) for q in model.param_names]
    lower = np.array([d.lower for d in decls], dtype=float)
    upper = np.array([d.upper for d in decls], dtype=float)
    why = np.full(len(theta), None, dtype=object)
    with np.errstate(invalid="ignore"):
        checks = (("not finite", ~np.isfinite(theta)), ("out of bounds", (theta < lower) | (theta > upper)))
    for label, bad in checks:
        first = bad.argmax(axis=1)
        for r in np.flatnonzero((why == None) & bad.any(axis=1)):  # noqa: E711 (object array)
            j = first[r]
            why[r] = (f"{model.param_names[j]} {label}" if label == "not finite"
                      else f"{model.param_names[j]} outside [{lower[j]:g}, {upper[j]:g}]")
    fine = why == None  # noqa: E711
    safe = np.where(fine[:, None], theta, fallback[None, :])  # keep rejected draws out of the solve
    ok, worst, _ = (np.asarray(a) for a in _at_rest(model, jnp.asarray(safe), jnp.asarray(rest)))
    for r in np.flatnonzero(fine & ~ok):
        why[r] = f"not at rest: {model.state_names[int(worst[r])]}"
    return why


def _batch_size(n: int) -> int:
    """A power of two (few compiled shapes), about n and a quarter, within [256, 4096]."""
    return int(min(4096, max(256, 2 ** int(np.ceil(np.log2(1.25 * n))))))


def sample_population(model: Model, like: str, n: int, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Draw ``n`` virtual patients like the bundled patients whose name starts with ``like``.

    Arguments:
        model: the composed model (`physiotwin.compose`).
        like: prefix of bundled patient names (``"adult"``); at least `MIN_GROUP` must match.
        n: how many virtual patients.
        seed: seed of ``numpy.random.default_rng``; the same seed gives the same patients.

    Returns:
        ``(table, report)``: the table has a ``patient`` column and one column per qualified
        parameter (in the order of ``model.param_names``); the report is ``{"like", "n", "seed",
        "drawn", "rejected", "reasons": {reason: count}, "parameters": [drawn parameters],
        "derived": [derived parameters], "shrinkage": lambda}``. ``drawn`` counts the draws up
        to the last one accepted, ``rejected`` those of them refused, each under its reason.

    Raises:
        PatientError: ``like`` matches fewer than `MIN_GROUP` bundled patients, or fewer than
            ``n`` draws were accepted in ``MAX_DRAWS * n``.
    """
    require_x64()
    if int(n) != n or n < 1:
        raise PatientError(f"n must be a positive whole number, not {n!r}")
    n = int(n)
    group = _group(like)
    _, theta_group, _ = resolve_patients(model, group)
    plan = _plan(model, theta_group)
    fit = _fit(theta_group[:, plan.sampled])
    rng = np.random.default_rng(seed)
    rest = rest_signals(model)
    kept, reasons, drawn = _accept(model, rng, fit, plan, rest, n, theta_group[0])
    if len(kept) < n:
        raise PatientError(f"like={like!r}: only {len(kept)} of {drawn} draws could start at rest "
                           f"({_summary(reasons)}); {n} were asked for")
    names = [f"{like}-virtual#{k:05d}" for k in range(1, n + 1)]
    table = pd.DataFrame(np.asarray(kept), columns=list(model.param_names))
    table.insert(0, "patient", names)
    report = {"like": like, "n": n, "seed": seed, "drawn": drawn, "rejected": drawn - n,
              "reasons": dict(reasons.most_common()), "parameters": [model.param_names[j] for j in plan.sampled],
              "derived": list(plan.derived), "shrinkage": fit.shrinkage}
    return table, report


def _accept(model, rng, fit, plan, rest, n: int, fallback) -> tuple[list[np.ndarray], Counter, int]:
    """Draw batches until ``n`` are accepted or ``MAX_DRAWS * n`` were drawn."""
    cap, size = MAX_DRAWS * n, _batch_size(n)
    kept: list[np.ndarray] = []
    reasons: Counter = Counter()
    drawn = 0
    while len(kept) < n and drawn < cap:
        theta = _derive(model, _draw(rng, fit, plan, size))
        why = _reasons(model, theta, rest, fallback)
        for row, reason in zip(theta[:cap - drawn], why[:cap - drawn]):
            drawn += 1
            if reason is None:
                kept.append(row)
                if len(kept) == n:
                    break
            else:
                reasons[reason] += 1
    return kept, reasons, drawn


def _summary(reasons: Counter) -> str:
    return "; ".join(f"{why}: {count}" for why, count in reasons.most_common(5)) or "no reason recorded"
