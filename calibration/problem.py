"""A record cut into multiple-shooting windows: the arrays one calibration works on.

The fitted part of the record is cut into windows of ``settings.window`` minutes
(integrated in parallel from their own starts); what is left after whole windows, at
least ``settings.validation`` of the record, is held out. Everything here is a JAX
array in one `Problem` pytree, so a calibration traces once per shape.
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..composer import Model
from ..errors import CalibrationError
from ..inputs import Inputs
from ..integrate import FixedSteps, integrate, minute_steps
from .data import Record, previous_reading
from .hybrid import TwinField
from .settings import FitSettings

__all__ = ["Problem", "build_problem", "windows_of", "split_windows", "corrected", "substeps", "rest_signals"]

def substeps(model: Model) -> FixedSteps:
    """The fixed-step scheme of calibration and forecasting (`physiotwin.integrate.minute_steps`)."""
    return minute_steps(model)


def rest_signals(model: Model) -> np.ndarray | None:
    """The signals with no event at all (the steady start's inputs), for coupled compositions."""
    from ..signals import compile_signals
    from ..timeline import Timeline

    if not model.coupled:
        return None
    return compile_signals(Timeline.empty(), model.signal_names, 1.0)[1][0]


class Problem(eqx.Module):
    """Arrays of one record cut into windows (all JAX arrays: one trace per shape).

    ``obs``/``prev``/``gap`` are ``[kind, window, minute]``; ``corr_win``/``corr_val``
    hold each input correction's event index per minute; ``columns`` its signal mask."""

    win: Inputs  # [W, L, ...]
    win_t0: jax.Array  # [W]
    obs: jax.Array
    prev: jax.Array
    gap: jax.Array
    val: Inputs  # [V, ...]
    val_obs: jax.Array  # [kind, V]
    corr_win: tuple
    corr_val: tuple
    columns: tuple
    scale: jax.Array  # [S] typical state sizes
    base: jax.Array  # [W, S] window starts of the initial trajectory
    base_rest: jax.Array  # [S] the rest state that trajectory starts from
    nonneg: jax.Array  # [S] bool
    day0: jax.Array
    n_obs: jax.Array
    rest: jax.Array | None


def windows_of(record: Record, settings: FitSettings) -> tuple[int, int, int]:
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


def split_windows(inputs: Inputs, W: int, L: int) -> tuple[Inputs, Inputs]:
    """A minute layout cut into ``W`` windows of ``L`` minutes (``[W, L]`` pieces) and the rest."""
    def head(a):
        return a[:W * L].reshape((W, L) + a.shape[1:])

    empty_t, empty_m = jnp.zeros((W, 0)), jnp.zeros((W, 0, inputs.resets.shape[1]), bool)
    win = Inputs(head(inputs.times), head(inputs.values), head(inputs.resets), empty_t, empty_m)
    val = Inputs(inputs.times[W * L:], inputs.values[W * L:], inputs.resets[W * L:], jnp.zeros(0),
                 jnp.zeros((0, inputs.resets.shape[1]), bool))
    return win, val


def corrected(values: jax.Array, indices: Sequence[jax.Array], factors: Sequence[jax.Array],
              columns: Sequence[jax.Array]) -> jax.Array:
    """Signal values with every input correction applied: the acting event's ``exp(c)``
    multiplies the correction's columns (index -1: no event, factor 1)."""
    for index, c, cols in zip(indices, factors, columns):
        factor = jnp.exp(jnp.concatenate([c, jnp.zeros(1, c.dtype)]))[index]
        values = values * jnp.where(cols, factor[..., None], 1.0)
    return values


def _trajectory_scale(model: Model, record: Record, theta0, y0, stepping: FixedSteps) -> tuple[np.ndarray, np.ndarray]:
    """The population model's trajectory over the record: each state's size (RMS) and the states."""
    field = TwinField(model, theta0, None, jnp.asarray(record.day0))
    run = eqx.filter_jit(lambda f, y, i: integrate(f, y, i, stepping, t0=jnp.asarray(0.0), observe=lambda t, y, u: y))
    _, traj = run(field, y0, record.inputs)
    states = np.concatenate([np.asarray(y0)[None], np.asarray(traj)])
    rms = np.sqrt(np.mean(states ** 2, axis=0))
    # a state that stays near 0 on this trajectory (a drug never given, a reflex at rest) keeps
    # half its declared size: its own tiny size would make every small move of it look huge
    declared = np.asarray(model.state_scales)
    return np.where(rms > 1e-12, np.maximum(rms, 0.5 * declared), declared), states


def _samples(states: np.ndarray, values: np.ndarray, n: int = 240, busiest: int = 60):
    """Points of a trajectory (states, inputs held over the minute): evenly spread, plus the
    minutes where the inputs are largest (so that every input is active somewhere)."""
    values = np.nan_to_num(values)
    idx = np.unique(np.concatenate([np.linspace(0, len(values) - 1, n).astype(int),
                                    np.argsort(-np.abs(values).sum(axis=1))[:busiest]]))
    return states[idx], values[idx]


def build_problem(model: Model, record: Record, settings: FitSettings, theta0, y0, stepping: FixedSteps):
    """Cut ``record`` into windows; ``theta0``/``y0``: the population start whose trajectory
    gives each window a first start and each state its typical size. Returns ``(problem,
    (W, L, V), samples)``, ``samples``: states and inputs at points of that trajectory."""
    W, L, V = windows_of(record, settings)
    win, val = split_windows(record.inputs, W, L)
    obs = record.obs[:, :W * L].reshape(len(record.kinds), W, L)
    if not np.isfinite(obs).any():
        raise CalibrationError(f"{record.source}: no readings fall in the fitted part of the record "
                               f"(the first {W * L} min)")
    prev, gap = previous_reading(obs)
    scale, states = _trajectory_scale(model, record, theta0, y0, stepping)
    nonneg = np.array([model.declaration(n).nonnegative for n in model.state_names])
    rest = rest_signals(model)
    prob = Problem(
        win, jnp.arange(W) * float(L), jnp.asarray(obs), jnp.asarray(prev), jnp.asarray(gap), val,
        jnp.asarray(record.obs[:, W * L:]),
        tuple(jnp.asarray(c.index[:W * L].reshape(W, L)) for c in record.corrections),
        tuple(jnp.asarray(c.index[W * L:]) for c in record.corrections),
        tuple(jnp.asarray(c.columns) for c in record.corrections),
        jnp.asarray(scale), jnp.asarray(states[np.arange(W) * L]), jnp.asarray(y0), jnp.asarray(nonneg),
        jnp.asarray(record.day0),
        jnp.asarray(float(np.isfinite(obs).sum())), None if rest is None else jnp.asarray(rest))
    return prob, (W, L, V), _samples(states[:-1], np.asarray(record.inputs.values))
