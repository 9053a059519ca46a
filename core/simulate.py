"""Solving: one jitted, vmapped diffrax solve per job, and the xarray shell around it.

- `Simulator`: a composed model bound to a timeline and an output grid. Calling it
  with one patient's parameters returns trajectories as JAX arrays, so any scalar
  function of them can be differentiated with `jax.grad`.
- `simulate`: the user-facing job. Many patients in one vmapped call; the result
  is an `xarray.Dataset` (see the README's output format).
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Mapping, Sequence

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pandas as pd
import xarray as xr
from jaxtyping import Array, Float

from .composer import Model, compose
from .contract import Organ
from .patients import resolve_patients
from .signals import compile_signals
from .steady import settle
from .timeline import Timeline, read_timeline

__all__ = ["Simulator", "simulate", "STATUS_MEANINGS", "SimulationError"]

#: per-patient solver status (CF flag variable ``solver_status``)
STATUS_MEANINGS = ("success", "max_steps_reached", "solver_failure", "nonfinite_values")
_PAD_BREAKPOINTS = 32  # breakpoint arrays are padded to a multiple of this: no retrace for small timeline changes


class SimulationError(ValueError):
    """Invalid simulation request (duration, output interval, x64 off)."""


def require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise SimulationError(
            "physiotwin needs float64: call jax.config.update('jax_enable_x64', True) "
            "before creating any JAX array (the CLI does this for you)"
        )


class _VectorField(eqx.Module):
    """The whole batch as one ODE: states ``(S, P)``, one patient per column.

    Timeline signals are looked up at ``min(t, t_hold)``: ``t_hold`` is the float just
    before the end of the current segment, so a stage evaluated exactly at a reset
    time still sees the old input (otherwise the controller creeps up to it)."""

    model: Model

    def __call__(self, t, y, args):
        theta, sig_t, sig_v, t_hold = args
        u = _lookup(jnp.minimum(t, t_hold), sig_t, sig_v)
        return jax.vmap(lambda yi, th: self.model.evaluate(t, yi, th, u)[0], in_axes=1, out_axes=1)(y, theta)


def _lookup(t, sig_t, sig_v):
    """Zero-order hold, right-continuous: the row of the last breakpoint <= t."""
    k = jnp.maximum(jnp.sum(t >= sig_t) - 1, 0)
    return sig_v[k]


def _worst_patient_norm(x: Float[Array, "state patient"]):
    """Error norm of a batch: the largest per-patient RMS norm. Patients whose error is
    NaN (their state blew up) are left out, so they do not stall the others; +inf is
    kept, since implicit solvers report a diverged Newton iteration that way and the
    step must be rejected. Step-size decisions are constants for the derivative."""
    r = jax.vmap(optx.rms_norm, in_axes=1)(jax.lax.stop_gradient(x))
    return jnp.max(jnp.where(jnp.isnan(r), 0.0, r))


def _controller(sig_t, b, rtol, atol, dtmax=None):
    """Step-size control on the worst patient, clipped at the timeline breakpoints
    before the segment end ``b``, and at most ``dtmax`` (see `Organ.max_step`)."""
    pid = diffrax.PIDController(rtol=rtol, atol=atol, norm=_worst_patient_norm, dtmax=dtmax)
    return diffrax.ClipStepSizeController(pid, jump_ts=jnp.where(sig_t[1:] < b, sig_t[1:], jnp.inf))


def _solve_shared(model, solver, adjoint, max_steps, theta, sig_t, sig_v, reset_t, reset_mask, save_ts, rtol, atol,
                  basal=None):
    """Solve a batch of patients (``theta`` is ``(P, Q)``) as one ODE with shared steps.

    The integration is split at the reset times (padded with +inf, which become
    empty segments at the end); within a segment every timeline breakpoint is a
    ``jump_ts`` of the step-size controller. ``atol`` is scaled per state by the
    declared `State.scale`. With ``basal`` (the signal values of the basal inputs),
    each patient starts from the composed model's steady state (`physiotwin.steady`).
    Returns ``ys[T, S, P]``, the diffrax result, steps, and per patient whether the
    start was found."""
    t0, t1 = save_ts[0], save_ts[-1]
    term = diffrax.ODETerm(_VectorField(model))
    atol = atol * jnp.asarray(model.state_scales)[:, None]
    bounds = jnp.concatenate([t0[None], jnp.clip(reset_t, t0, t1), t1[None]])
    real = jnp.concatenate([jnp.array([False]), reset_t < t1])
    # each output time comes from the segment that contains it (right-continuous at resets)
    which = jnp.sum(save_ts[:, None] >= jnp.where(reset_t < t1, reset_t, jnp.inf)[None, :], axis=1)

    def reset(a, y, mask):
        u = _lookup(a, sig_t, sig_v)
        return jax.vmap(lambda yi, th: model.reset(a, yi, th, u, mask), in_axes=(1, 0), out_axes=1)(y, theta)

    def segment(carry, j):
        y, ys, result, steps = carry
        a, b = bounds[j], bounds[j + 1]
        if reset_t.shape[0]:  # (static) no organ resets: a single segment
            y = jnp.where(real[j], reset(a, y, reset_mask[jnp.maximum(j - 1, 0)]), y)
        sol = diffrax.diffeqsolve(
            term, solver, t0=a, t1=b, dt0=jnp.minimum(1.0, jnp.maximum(b - a, 1e-9)), y0=y,
            args=(theta.T, sig_t, sig_v, jnp.nextafter(b, -jnp.inf)), saveat=diffrax.SaveAt(ts=jnp.clip(save_ts, a, b)),
            stepsize_controller=_controller(sig_t, b, rtol, atol, _max_step(model, solver)), adjoint=adjoint, max_steps=max_steps, throw=False,
        )
        ys = jnp.where((which == j)[:, None, None], sol.ys, ys)
        result = jnp.where(result == 0, _result_code(sol.result), result)
        return (sol.ys[-1], ys, result, steps + sol.stats["num_steps"]), None

    def start(th):
        y = model.initial_state(th, _lookup(t0, sig_t, sig_v))
        if basal is None:
            return y, jnp.array(True)
        return settle(model, th, basal, y)

    y0, started = jax.vmap(start, out_axes=(1, 0))(theta)
    carry = (y0, jnp.zeros(save_ts.shape + y0.shape, y0.dtype), jnp.array(0), jnp.array(0))
    (_, ys, result, steps), _ = jax.lax.scan(segment, carry, jnp.arange(reset_t.shape[0] + 1))
    return ys, result, steps, started


def _max_step(model, solver):
    """Largest step an explicit solver may take: the smallest `Organ.max_step` of the
    composition (fast modes that sit at rest would otherwise let the step grow past
    the stability limit: the trajectory stays right but its derivative diverges)."""
    if isinstance(solver, diffrax.AbstractImplicitSolver):
        return None
    limit = min((o.max_step for o in model.organs), default=math.inf)
    return None if math.isinf(limit) else limit


def _result_code(result):
    """diffrax result -> 0 success, 1 max_steps_reached, 2 other solver failure."""
    return jnp.where(result == diffrax.RESULTS.successful, 0,
                     jnp.where(result == diffrax.RESULTS.max_steps_reached, 1, 2))


def _solve_and_report(model, solver, adjoint, max_steps, theta, sig_t, sig_v, reset_t, reset_mask, save_ts, rtol, atol,
                      basal=None):
    """`_solve_shared`, then outputs and per-patient status and steps, patients first:
    ``(ys[P,T,S], outs[P,T,O], status[P], steps[P])``."""
    ys, result, steps, started = _solve_shared(model, solver, adjoint, max_steps, theta, sig_t, sig_v, reset_t,
                                               reset_mask, save_ts, rtol, atol, basal)
    ys = jnp.transpose(ys, (2, 0, 1))
    u = jax.vmap(lambda t: _lookup(t, sig_t, sig_v))(save_ts)
    outs = jax.vmap(lambda y, th: jax.vmap(lambda t, yt, ut: model.evaluate(t, yt, th, ut)[1])(save_ts, y, u))(ys, theta)
    finite = jnp.all(jnp.isfinite(ys), axis=(1, 2)) & jnp.all(jnp.isfinite(outs), axis=(1, 2))
    status = jnp.where(started, jnp.where((result == 0) & ~finite, 3, result), 2)
    return ys, outs, status, jnp.broadcast_to(steps, status.shape)


_TRACES = [0]


def trace_count() -> int:
    """How many times the batched solver has been traced (compiled) in this process;
    tests use it to check that changing only numbers does not recompile."""
    return _TRACES[0]


def _per_patient(model, solver, adjoint, max_steps, theta, *rest):
    """Every patient with its own step sizes (a vmap of one-patient solves)."""
    out = jax.vmap(lambda th: _solve_and_report(model, solver, adjoint, max_steps, th[None], *rest))(theta)
    return jax.tree.map(lambda a: a[:, 0], out)


@eqx.filter_jit
def _solve_batch(model, solver, adjoint, max_steps, theta, sig_t, sig_v, reset_t, reset_mask, save_ts, rtol, atol,
                 basal=None, mesh=None, per_patient=False):
    """The compiled entry point.

    By default all patients step together (one shared step size: no masking of
    finished patients, and every operation works on whole batches). With
    ``per_patient`` each patient has its own step sizes: needed by implicit solvers,
    whose Newton iterations would otherwise see one Jacobian for the whole batch, and
    used as the fallback that isolates a failing patient. With a ``mesh`` (several
    devices, e.g. CPU cores), the patients are split evenly over its devices (padded
    by repeating the last one), and each part is solved independently."""
    _TRACES[0] += 1  # runs at trace time only
    rest = (sig_t, sig_v, reset_t, reset_mask, save_ts, rtol, atol, basal)
    batch = _per_patient if per_patient else _solve_and_report
    solve = lambda th: batch(model, solver, adjoint, max_steps, th, *rest)
    if mesh is None:
        return solve(theta)
    n = theta.shape[0]
    pad = -n % mesh.size
    if pad:
        theta = jnp.concatenate([theta, jnp.repeat(theta[-1:], pad, axis=0)])
    spec = jax.sharding.PartitionSpec("patient")
    out = jax.shard_map(solve, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(theta)
    return jax.tree.map(lambda a: a[:n], out) if pad else out


def _patient_mesh(n_patients: int):
    """A one-axis mesh over the local devices, if there are several and enough patients."""
    devices = jax.local_devices()
    if len(devices) < 2 or n_patients < 2 * len(devices):
        return None
    return jax.sharding.Mesh(np.array(devices), ("patient",))


def _reset_times(model: Model, times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Breakpoints where a reset-triggering signal changes, and which organs reset there;
    padded (with +inf) to a multiple of 8 so a few more meals do not recompile."""
    n_org = len(model.organs)
    ts, masks = [], []
    for k in range(1, len(times)):
        mask = [bool(cols) and bool(np.any(values[k, list(cols)] != values[k - 1, list(cols)]))
                for cols in model.reset_columns]
        if any(mask):
            ts.append(times[k])
            masks.append(mask)
    if not any(model.reset_columns):
        return np.zeros(0), np.zeros((0, n_org), bool)
    size = 8 * max(1, math.ceil(len(ts) / 8))
    t = np.full(size, np.inf)
    m = np.zeros((size, n_org), bool)
    if ts:
        t[:len(ts)] = ts
        m[:len(ts)] = masks
    return t, m


def _pad_signals(times: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = len(times)
    size = _PAD_BREAKPOINTS * max(1, math.ceil(k / _PAD_BREAKPOINTS))
    t = np.full(size, np.inf)
    t[:k] = times
    v = np.repeat(values[-1:], size, axis=0) if k else np.zeros((size, values.shape[1]))
    v[:k] = values
    return t, v


def _as_timeline(timeline) -> Timeline:
    if timeline is None:
        return Timeline.empty()
    if isinstance(timeline, Timeline):
        return timeline
    from .registry import timeline_kinds

    if isinstance(timeline, pd.DataFrame):
        from .timeline import timeline_from_frame

        return timeline_from_frame(timeline, kinds=timeline_kinds())
    return read_timeline(timeline, kinds=timeline_kinds())


def _duration_minutes(duration=None, hours=None, days=None, minutes=None) -> float:
    given = [(v, s) for v, s in ((duration, 1.0), (minutes, 1.0), (hours, 60.0), (days, 1440.0)) if v is not None]
    if len(given) != 1:
        raise SimulationError("give exactly one of duration (minutes), minutes, hours or days")
    value, scale = given[0]
    try:
        total = float(value) * scale
    except (TypeError, ValueError):
        raise SimulationError(f"duration must be a number, got {value!r}") from None
    if not math.isfinite(total) or total <= 0:
        raise SimulationError(f"duration must be > 0, got {value!r}")
    return total


class Simulator(eqx.Module):
    """A model bound to a timeline and an output grid, for one patient at a time.

    ```python
    sim = physiotwin.Simulator(["glucose"], "meals.csv", hours=24)
    p = sim.parameters("adult#001")              # {"glucose.BW": Array(102.32), ...}
    traj = sim(p)                                # {"glucose.plasma_glucose": Array[T], ...}
    g = jax.grad(lambda p: sim(p)["glucose.plasma_glucose"].mean())(p)
    ```

    Arguments:
        organs: organ names or instances, or a composed `Model`.
        timeline: a `Timeline`, a CSV/TOML path, a DataFrame, or None (no events).
        duration / minutes / hours / days: simulated time (exactly one).
        every: output interval in minutes.
        solver: a diffrax solver; by default `diffrax.Kvaerno5()` when an organ of the
            composition is stiff (`Organ.stiff`), else `diffrax.Tsit5()`.
        rtol, atol: tolerances of the PID step-size controller.
        max_steps: solver step budget; a patient that exceeds it is flagged.
        adjoint: diffrax adjoint for gradients (default recursive checkpointing).
        initial: ``"steady"`` starts each patient from the composed model's steady
            state at its basal inputs (`physiotwin.steady.settle`); ``"organs"`` from
            the organs' own initial states. Default: ``"steady"`` when organs are coupled
            (each organ's own initial state is its equilibrium only at its default inputs).
    """

    model: Model
    times: Float[Array, " time"]
    sig_t: Float[Array, " breakpoint"]
    sig_v: Float[Array, "breakpoint signal"]
    reset_t: Float[Array, " reset"]
    reset_mask: Array
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    solver: diffrax.AbstractSolver = eqx.field(static=True)
    adjoint: diffrax.AbstractAdjoint = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    start: datetime | None = eqx.field(static=True)
    basal: Float[Array, " signal"] | None

    def __init__(self, organs, timeline=None, duration=None, *, minutes=None, hours=None, days=None,
                 every: float = 5.0, solver=None, rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int | None = None, adjoint=None, initial: str | None = None):
        require_x64()
        self.model = organs if isinstance(organs, Model) else compose(organs)
        total = _duration_minutes(duration, hours, days, minutes)
        try:
            every = float(every)
        except (TypeError, ValueError):
            raise SimulationError(f"output interval must be a number of minutes, got {every!r}") from None
        if not math.isfinite(every) or every <= 0:
            raise SimulationError(f"output interval must be > 0 minutes, got {every!r}")
        n = int(math.floor(total / every + 1e-9))
        times = np.arange(n + 1) * every
        if times[-1] < total - 1e-9:
            times = np.append(times, total)
        tl = _as_timeline(timeline)
        sig_t, sig_v = compile_signals(tl, self.model.signal_names, total)
        reset_t, reset_mask = _reset_times(self.model, sig_t, sig_v)
        sig_t, sig_v = _pad_signals(sig_t, sig_v)
        self.reset_t = jnp.asarray(reset_t)
        self.reset_mask = jnp.asarray(reset_mask)
        self.times = jnp.asarray(times)
        self.sig_t = jnp.asarray(sig_t)
        self.sig_v = jnp.asarray(sig_v)
        self.rtol = jnp.asarray(rtol, dtype=float)
        self.atol = jnp.asarray(atol, dtype=float)
        stiff = any(o.stiff for o in self.model.organs)
        self.solver = (diffrax.Kvaerno5() if stiff else diffrax.Tsit5()) if solver is None else solver
        initial = ("steady" if self.model.coupled else "organs") if initial is None else initial
        if initial not in ("steady", "organs"):
            raise SimulationError(f"initial must be 'steady' or 'organs', not {initial!r}")
        # the basal inputs: what the signals are when the timeline holds no event at all
        self.basal = jnp.asarray(compile_signals(Timeline.empty(), self.model.signal_names, total)[1][0]) \
            if initial == "steady" else None
        self.adjoint = diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
        # budget: generous per simulated day and per breakpoint, and static (no retrace per scenario)
        self.max_steps = int(max_steps) if max_steps is not None else 4096 * max(1, math.ceil(total / 1440.0))
        self.start = tl.start

    # --------------------------------------------------------------- parameters
    def parameters(self, patient: str | pd.DataFrame | Path = "adult#001") -> dict[str, Array]:
        """One patient's parameters, ``{"organ.param": scalar}``, ready for `__call__`."""
        _, theta, _ = resolve_patients(self.model, patient)
        if theta.shape[0] != 1:
            raise ValueError("parameters() takes one patient; use simulate() for several")
        return {q: jnp.asarray(v) for q, v in zip(self.model.param_names, theta[0])}

    def _theta(self, params: Mapping[str, Array]) -> Array:
        missing = [q for q in self.model.param_names if q not in params]
        if missing:
            raise KeyError(f"parameters missing: {missing}")
        return jnp.stack([jnp.asarray(params[q], dtype=float) for q in self.model.param_names])

    # ---------------------------------------------------------------- solving
    def solve(self, theta: Float[Array, "patient param"]):
        """Raw batched solve: ``(states[P,T,S], outputs[P,T,O], status[P], steps[P])``.

        With an explicit solver all patients step together; if that shared solve
        fails (``max_steps`` or a solver failure, e.g. one patient too stiff), the
        batch is solved again with per-patient step sizes so that only the failing
        patients are flagged. Implicit solvers always use per-patient steps."""
        args = (self.model, self.solver, self.adjoint, self.max_steps, theta, self.sig_t, self.sig_v, self.reset_t,
                self.reset_mask, self.times, self.rtol, self.atol, self.basal)
        implicit = isinstance(self.solver, diffrax.AbstractImplicitSolver)
        # (the steady start's linear solves stall under shard_map on CPU devices: one device then)
        mesh = _patient_mesh(theta.shape[0]) if self.basal is None else None
        result = _solve_batch(*args, mesh=mesh, per_patient=implicit)
        status = result[2]
        if (not implicit and theta.shape[0] > 1 and not isinstance(status, jax.core.Tracer)
                and bool(jnp.any((status == 1) | (status == 2)))):
            result = _solve_batch(*args, per_patient=True)
        return result

    def __call__(self, params: Mapping[str, Array]) -> dict[str, Array]:
        """Trajectories of every state and output for one patient, by qualified name."""
        ys, outs, _, _ = self.solve(self._theta(params)[None])
        traj = {n: ys[0, :, i] for i, n in enumerate(self.model.state_names)}
        traj.update({n: outs[0, :, i] for i, n in enumerate(self.model.output_names)})
        return traj

    # ------------------------------------------------------------- to xarray
    def to_dataset(self, names: Sequence[str], theta: np.ndarray, single: bool, result) -> xr.Dataset:
        from . import __version__

        ys, outs, status, steps = (np.asarray(a) for a in result)
        model = self.model
        times = np.asarray(self.times)
        data_vars = {}
        for arr, qnames in ((ys, model.state_names), (outs, model.output_names)):
            for i, q in enumerate(qnames):
                decl = model.declaration(q)
                values = arr[:, :, i]
                dims = ("patient", "time")
                if single:
                    values, dims = values[0], ("time",)
                data_vars[q] = xr.Variable(dims, values, attrs={
                    "units": decl.unit, "long_name": decl.description, "organ": q.split(".", 1)[0]})
        flag = status.astype(np.int8)
        data_vars["solver_status"] = xr.Variable(
            () if single else ("patient",), flag[0] if single else flag,
            attrs={"long_name": "solver status per patient", "flag_values": np.arange(len(STATUS_MEANINGS), dtype=np.int8),
                   "flag_meanings": " ".join(STATUS_MEANINGS)})
        data_vars["solver_steps"] = xr.Variable(
            () if single else ("patient",), steps[0] if single else steps,
            attrs={"long_name": "accepted + rejected solver steps (shared by the patients solved together)",
                   "units": "1"})
        data_vars["parameter_values"] = xr.Variable(
            ("parameter",) if single else ("patient", "parameter"), theta[0] if single else theta,
            attrs={"long_name": "patient parameters used (units: see parameter_units)"})
        coords = {
            "time": ("time", times, {"units": "min", "long_name": "minutes since start"}),
            "parameter": ("parameter", list(model.param_names)),
            "parameter_units": ("parameter", [model.declaration(q).unit for q in model.param_names]),
        }
        coords["patient"] = ((), names[0]) if single else ("patient", list(names))
        if self.start is not None:
            coords["datetime"] = ("time", pd.Timestamp(self.start) + pd.to_timedelta(times, unit="min"))
        solver = type(self.solver).__name__
        attrs = {
            "title": "physiotwin simulation",
            "organs": " ".join(model.organ_names),
            "physiotwin_version": __version__,
            "jax_version": jax.__version__,
            "diffrax_version": diffrax.__version__ if hasattr(diffrax, "__version__") else "",
            "solver": solver,
            "step_size_controller": "PIDController, worst-patient norm (patients share steps), "
                                    "atol x state scale, jump_ts at every timeline breakpoint",
            "rtol": float(self.rtol),
            "atol": float(self.atol),
            "max_steps": self.max_steps,
            "initial_state": "composed steady state at basal inputs" if self.basal is not None else "organs' initial states",
            "Conventions": "CF-1.10",
        }
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def simulate(
    organs: Sequence[str | Organ] | Model,
    patients: str | Sequence[str] | pd.DataFrame | Path,
    timeline=None,
    duration: float | None = None,
    *,
    minutes: float | None = None,
    hours: float | None = None,
    days: float | None = None,
    every: float = 5.0,
    solver=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int | None = None,
    initial: str | None = None,
) -> xr.Dataset:
    """Simulate one or many patients on a timeline.

    Arguments:
        organs: organ names (``["glucose"]``), organ instances, or a composed `Model`.
        patients: a bundled patient name, a list of names, or a parameter table
            (DataFrame, or CSV path) with one row per patient.
        timeline: CSV/TOML path, DataFrame, `Timeline`, or None.
        duration: minutes (or give ``minutes=``, ``hours=`` or ``days=``).
        every: output interval in minutes (default 5).
        solver, rtol, atol, max_steps, initial: see `Simulator`.

    Returns:
        An `xarray.Dataset` with dims ``time`` (and ``patient`` unless a single name
        was given), one variable per state and output named ``organ.var``, and a
        per-patient ``solver_status`` flag. A patient whose solve fails is flagged;
        the others' results stand.
    """
    sim = Simulator(organs, timeline, duration, minutes=minutes, hours=hours, days=days, every=every,
                    solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, initial=initial)
    names, theta, single = resolve_patients(sim.model, patients)
    result = sim.solve(jnp.asarray(theta))
    return sim.to_dataset(names, theta, single, result)
