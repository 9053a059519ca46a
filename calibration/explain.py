"""What a hybrid twin's networks learned: attributions, daily profiles and a symbolic fit.

Everything is read off the twin's *fitted trajectory*: the replay of its training record
(each fitted window from its fitted start, `whatif.replay`), every 5 min. Along it each
residual slot's network sees its inputs (normalised features, the clock, the
conditioning vector) and gives its term. From those samples:

- **Attribution** (`attribution`): for every input group of a slot (each feature, the
  time of day as one group of four harmonics, the conditioning vector), the RMS change of
  the term when that group is set to its mean (0 after normalisation; 0 is also the
  daily mean of the harmonics), relative to the RMS of the term. An occlusion measure:
  model-agnostic, exact for the samples, and readable without knowing the network.
- **Daily profile** (`daily_profile`): the term's mean and 10/90 % quantiles by hour of day.
- **Symbolic fit** (`symbolic_fit`): a sparse regression of the term on a small library
  (constant, two daily harmonics, each feature, its square and its product with the first
  harmonic) by sequentially thresholded least squares (STLSQ, the SINDy algorithm of
  Brunton et al., PNAS 113:3932, 2016), hand-rolled: a few lines, where `pysindy` would
  bring scikit-learn and a derivative machinery we do not need. The threshold is the
  largest that keeps R² within 0.02 of the dense fit; the result is an equation in the
  slot's own variables, with its R² and RMSE.

The same functions serve any composition: they know slots, features and the clock, not
what the slots stand for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ..errors import TwinError
from .data import record_minutes
from .hybrid import DAY, Hybrid
from .problem import substeps
from .store import move_into_place
from .whatif import replays, corrected_inputs, plan_of, window_layout

__all__ = ["Samples", "fitted_samples", "samples_along", "attribution", "daily_profile", "time_of_day_term",
           "symbolic_fit", "explain", "write_explanation", "correlation"]

CLOCK = ("sin(2πh/24)", "cos(2πh/24)", "sin(4πh/24)", "cos(4πh/24)")


@dataclass(frozen=True)
class Samples:
    """A hybrid's networks along a trajectory: ``minute [T]`` since the record's start,
    ``hour [T]`` of day, per slot ``inputs [T, n_in]`` and ``terms [T]``."""

    hybrid: Hybrid
    minute: np.ndarray
    hour: np.ndarray
    inputs: tuple[np.ndarray, ...]
    terms: np.ndarray  # [T, slot]


def samples_along(hybrid: Hybrid, minute: np.ndarray, ys: np.ndarray, outs: np.ndarray, day0: float) -> Samples:
    """Network inputs and terms at the given points of a trajectory (``ys [T, S]``, ``outs [T, O]``)."""
    t = jnp.asarray(minute, jnp.float64)
    d0 = jnp.asarray(day0, jnp.float64)
    inputs = jax.jit(jax.vmap(lambda a, y, o: hybrid.inputs(a, y, o, d0)))(t, jnp.asarray(ys), jnp.asarray(outs))
    terms = jax.jit(jax.vmap(lambda a, y, o: hybrid.terms(a, y, o, d0)))(t, jnp.asarray(ys), jnp.asarray(outs))
    hour = ((np.asarray(minute, float) + float(day0)) % DAY) / 60.0
    return Samples(hybrid, np.asarray(minute, float), hour, tuple(np.asarray(x) for x in inputs), np.asarray(terms))


def fitted_samples(twin, every: int = 5) -> Samples:
    """`samples_along` the twin's fitted trajectory over its training record."""
    if twin.hybrid is None:
        raise TwinError("this twin has no residual networks to explain (it was calibrated with --no-hybrid)")
    record = twin.training_timeline()
    if record is None:
        raise TwinError("this twin was saved without its record; explaining its networks needs it")
    n = record_minutes(record)
    n -= n % every
    starts, ends, L = window_layout(twin, "twin")
    fitted = {k: np.asarray(v) for k, v in twin.result.corrections.items()}
    plan = plan_of(corrected_inputs(twin.model, record, record, n, fitted), starts, ends, L)
    model = twin.model
    nonneg = jnp.asarray([model.declaration(s).nonnegative for s in model.state_names])
    stacked = jax.tree_util.tree_map(lambda a: a[None], plan)
    out = np.asarray(replays(model, jnp.asarray(twin.theta("twin"))[None], twin.hybrid,
                              jnp.asarray(record.minute_of_day), stacked, nonneg, substeps(model), int(every)))[0, 0]
    O = len(model.output_names)
    minute = np.arange(every, n + 1, every, dtype=float)[: out.shape[0]]
    return samples_along(twin.hybrid, minute, out[:, O:], out[:, :O], record.minute_of_day)


def _groups(hybrid: Hybrid, i: int) -> list[tuple[str, list[int]]]:
    slot = hybrid.slots[i]
    nf = len(slot.feature_names)
    groups = [(name, [j]) for j, name in enumerate(slot.feature_names)]
    groups.append(("time of day", list(range(nf, nf + 4))))
    if hybrid.cond.shape[0]:
        groups.append(("conditioning", list(range(nf + 4, nf + 4 + hybrid.cond.shape[0]))))
    return groups


def attribution(s: Samples) -> pd.DataFrame:
    """Occlusion importance of every input group of every slot (see the module docstring)."""
    rows = []
    for i, (slot, net, x) in enumerate(zip(s.hybrid.slots, s.hybrid.nets, s.inputs)):
        full = s.terms[:, i]
        rms = float(np.sqrt(np.mean(full ** 2)))
        f = jax.jit(jax.vmap(lambda v, net=net, scale=slot.scale: scale * net(v)[0]))
        for name, cols in _groups(s.hybrid, i):
            x0 = np.array(x, copy=True)
            x0[:, cols] = 0.0
            change = float(np.sqrt(np.mean((full - np.asarray(f(jnp.asarray(x0)))) ** 2)))
            rows.append({"slot": slot.name, "input": name, "importance": change / rms if rms > 0 else 0.0,
                         "rms_change": change, "rms_term": rms})
    return pd.DataFrame(rows)


def daily_profile(s: Samples) -> pd.DataFrame:
    """Each slot's term by hour of day: mean and 10/90 % quantiles."""
    rows = []
    hour = np.floor(s.hour).astype(int)
    for i, slot in enumerate(s.hybrid.slots):
        for h in range(24):
            v = s.terms[hour == h, i]
            if v.size:
                rows.append({"slot": slot.name, "hour": h, "mean": float(np.mean(v)),
                             "q10": float(np.quantile(v, 0.1)), "q90": float(np.quantile(v, 0.9)), "n": int(v.size)})
    return pd.DataFrame(rows)


def _library(s: Samples, i: int) -> tuple[np.ndarray, list[str]]:
    slot = s.hybrid.slots[i]
    x = s.inputs[i]
    nf = len(slot.feature_names)
    z = x[:, :nf]
    clock = x[:, nf:nf + 4]
    cols, names = [np.ones(len(x))], ["1"]
    cols += [clock[:, k] for k in range(4)]
    names += list(CLOCK)
    for j, fname in enumerate(slot.feature_names):
        zn = f"z({fname.split('.', 1)[1]})"
        cols += [z[:, j], z[:, j] ** 2, z[:, j] * clock[:, 0], z[:, j] * clock[:, 1]]
        names += [zn, f"{zn}²", f"{zn}·{CLOCK[0]}", f"{zn}·{CLOCK[1]}"]
    return np.stack(cols, axis=1), names


def _stlsq(A: np.ndarray, y: np.ndarray, threshold: float, iterations: int = 10) -> np.ndarray:
    """Sequentially thresholded least squares on columns scaled to unit RMS."""
    norm = np.sqrt(np.mean(A ** 2, axis=0))
    norm[norm == 0] = 1.0
    B = A / norm
    keep = np.ones(B.shape[1], bool)
    coef = np.zeros(B.shape[1])
    for _ in range(iterations):
        coef[:] = 0.0
        if not keep.any():
            break
        coef[keep] = np.linalg.lstsq(B[:, keep], y, rcond=None)[0]
        small = np.abs(coef) < threshold
        if not (keep & small).any():
            break
        keep &= ~small
    return coef / norm


def _r2(y, pred) -> float:
    ss = float(np.sum((y - np.mean(y)) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss if ss > 0 else 1.0


def symbolic_fit(s: Samples, tolerance: float = 0.02) -> list[dict]:
    """Per slot: the sparsest STLSQ model within ``tolerance`` of the dense fit's R²."""
    out = []
    for i, slot in enumerate(s.hybrid.slots):
        A, names = _library(s, i)
        y = s.terms[:, i]
        scale = float(np.sqrt(np.mean(y ** 2))) or 1.0
        dense = _stlsq(A, y, 0.0)
        r2_dense = _r2(y, A @ dense)
        best = dense
        for thr in np.geomspace(1e-3, 1.0, 40) * scale:
            coef = _stlsq(A, y, thr)
            if _r2(y, A @ coef) >= r2_dense - tolerance:
                best = coef
        pred = A @ best
        terms = [(float(c), n) for c, n in zip(best, names) if c != 0.0]
        out.append({"slot": slot.name, "equation": _equation(slot.name, terms), "r2": _r2(y, pred),
                    "rmse": float(np.sqrt(np.mean((y - pred) ** 2))), "r2_dense": r2_dense,
                    "terms": {n: c for c, n in terms},
                    "features": {f: {"mean": m, "spread": sd} for f, m, sd in
                                 zip(slot.feature_names, s.hybrid.mean[i], s.hybrid.spread[i])}})
    return out


def _equation(name: str, terms: list[tuple[float, str]]) -> str:
    if not terms:
        return f"{name} = 0"
    parts = []
    for k, (c, n) in enumerate(terms):
        sign = "-" if c < 0 else ("+" if k else "")
        mag = f"{abs(c):.4g}"
        parts.append(f"{sign} {mag}" if n == "1" else f"{sign} {mag}·{n}")
    return f"{name} = " + " ".join(p.strip() for p in parts)


def explain(twin, every: int = 5) -> dict:
    """Attribution table, daily profile and symbolic fit of a hybrid twin's networks."""
    s = fitted_samples(twin, every)
    return {"samples": s, "attribution": attribution(s), "profile": daily_profile(s), "symbolic": symbolic_fit(s)}


def time_of_day_term(s: Samples, i: int = 0) -> np.ndarray:
    """Slot ``i``'s term at each sample with its features at their mean (0 after
    normalisation): the learned daily profile, without what the term does with the state."""
    slot, net = s.hybrid.slots[i], s.hybrid.nets[i]
    x = np.array(s.inputs[i], copy=True)
    x[:, :len(slot.feature_names)] = 0.0
    return np.asarray(jax.jit(jax.vmap(lambda v: slot.scale * net(v)[0]))(jnp.asarray(x)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (NaN when either is constant)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def write_explanation(ex: dict, out, source: str = "") -> None:
    """``attribution.csv``, ``profile.csv``, ``symbolic.json`` and ``explain.png`` in ``out``
    (written to a temporary folder first, then moved into place)."""
    import json
    import shutil
    import tempfile
    from pathlib import Path

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "symbolic.json").exists())):
        raise TwinError(f"--out {out}: exists and is not an explanation folder; not overwriting it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ex["attribution"].to_csv(tmp / "attribution.csv", index=False)
        ex["profile"].to_csv(tmp / "profile.csv", index=False)
        (tmp / "symbolic.json").write_text(json.dumps({"twin": str(source), "slots": ex["symbolic"]}, indent=1))
        _plot(ex, tmp / "explain.png")
        move_into_place(tmp, out, "symbolic.json", "explanation")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _plot(ex: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s: Samples = ex["samples"]
    n = len(s.hybrid.slots)
    fig, axes = plt.subplots(n, 2, figsize=(11, 3.2 * n), squeeze=False)
    for i, slot in enumerate(s.hybrid.slots):
        att = ex["attribution"][ex["attribution"].slot == slot.name]
        ax = axes[i, 0]
        ax.barh(att.input, att.importance, color="tab:blue")
        ax.set_xlabel("importance (RMS change when the input is set to its mean / RMS term)")
        ax.set_title(slot.name)
        ax = axes[i, 1]
        ax.scatter(s.hour, s.terms[:, i], s=2, alpha=0.3, color="tab:gray", label="fitted trajectory")
        prof = ex["profile"][ex["profile"].slot == slot.name]
        ax.plot(prof.hour + 0.5, prof["mean"], color="tab:red", label="mean by hour")
        ax.fill_between(prof.hour + 0.5, prof.q10, prof.q90, color="tab:red", alpha=0.2, label="10-90 %")
        ax.set_xlabel("hour of day")
        ax.set_ylabel("relative change" if slot.modulates else "term (state unit / min)")
        ax.set_xlim(0, 24)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
