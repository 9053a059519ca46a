"""Solving: one jitted, vmapped solve per job, and the xarray shell around it.

- `Simulator`: a composed model bound to a timeline and an output grid. Calling it
  with one patient's parameters returns trajectories as JAX arrays, so any scalar
  function of them can be differentiated with `jax.grad`.
- `simulate`: the user-facing job. Many patients in one vmapped call; the result
  is an `xarray.Dataset` (see the README's output format).

The integration itself is `physiotwin.integrate` (adaptive step control; patients
sharing steps or each with its own).
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
import pandas as pd
import xarray as xr
from jaxtyping import Array, Float

from .composer import Model, compose
from .contract import Organ
from .errors import SimulationError
from .inputs import Inputs, piecewise_inputs
from .integrate import Adaptive, PerPatient, SharedSteps, integrate_batch, max_step
from .patients import resolve_patients
from .signals import compile_signals
from .steady import settle
from .timeline import Timeline, read_timeline, timeline_from_frame

__all__ = ["Simulator", "simulate", "STATUS_MEANINGS", "SimulationError", "status_reasons"]

#: per-patient solver status (CF flag variable ``solver_status``)
STATUS_MEANINGS = ("success", "max_steps_reached", "solver_failure", "nonfinite_values", "no_steady_state")
NO_STEADY_STATE = 4


def require_x64() -> None:
    if not jax.config.jax_enable_x64:
        raise SimulationError(
            "physiotwin needs float64: call jax.config.update('jax_enable_x64', True) "
            "before creating any JAX array (the CLI does this for you)"
        )


def _start(model, theta, inputs: Inputs, t0, rest):
    """Each patient's start: the organs' initial states, or the composed steady state.
    Returns ``(y0[P, S], settled ok[P], worst state[P], its rate per day[P])``."""

    def one(th):
        y = model.initial_state(th, inputs.at(t0))
        if rest is None:
            return y, jnp.array(True), jnp.array(0), jnp.array(0.0)
        s = settle(model, th, rest, y)
        return s.y, s.ok, s.worst, s.rate

    return jax.vmap(one)(theta)


def _solve_and_report(model, stepping, theta, inputs, save_ts, rest, batching):
    """Start, integrate and evaluate the outputs: ``(ys[P,T,S], outs[P,T,O], status[P],
    steps[P], worst[P], rate[P])``."""
    y0, started, worst, rate = _start(model, theta, inputs, save_ts[0], rest)
    ys, result, steps = integrate_batch(model, theta, y0, inputs, stepping, batching, save_ts)
    u = jax.vmap(inputs.at)(save_ts)
    outs = jax.vmap(lambda y, th: jax.vmap(lambda t, yt, ut: model.evaluate(t, yt, th, ut)[1])(save_ts, y, u))(
        ys, theta)
    finite = jnp.all(jnp.isfinite(ys), axis=(1, 2)) & jnp.all(jnp.isfinite(outs), axis=(1, 2))
    status = jnp.where(started, jnp.where((result == 0) & ~finite, 3, result), NO_STEADY_STATE)
    return ys, outs, status, steps, worst, rate


_TRACES = [0]


def trace_count() -> int:
    """How many times the batched solver has been traced (compiled) in this process;
    tests use it to check that changing only numbers does not recompile."""
    return _TRACES[0]


@eqx.filter_jit
def _solve_batch(model, stepping, theta, inputs, save_ts, rest=None, mesh=None, per_patient=False):
    """The compiled entry point.

    By default all patients step together (`SharedSteps`); with ``per_patient`` each has
    its own step sizes (`PerPatient`: implicit solvers, and the fallback that isolates a
    failing patient). With a ``mesh`` (several devices, e.g. CPU cores), the patients are
    split evenly over its devices (padded by repeating the last one)."""
    _TRACES[0] += 1  # runs at trace time only
    batching = PerPatient() if per_patient else SharedSteps()
    solve = lambda th: _solve_and_report(model, stepping, th, inputs, save_ts, rest, batching)
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


def _as_timeline(timeline) -> Timeline:
    if timeline is None:
        return Timeline.empty()
    if isinstance(timeline, Timeline):
        return timeline
    if isinstance(timeline, pd.DataFrame):
        return timeline_from_frame(timeline)
    return read_timeline(timeline)


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


def _output_times(total: float, every) -> np.ndarray:
    try:
        every = float(every)
    except (TypeError, ValueError):
        raise SimulationError(f"output interval must be a number of minutes, got {every!r}") from None
    if not math.isfinite(every) or every <= 0:
        raise SimulationError(f"output interval must be > 0 minutes, got {every!r}")
    times = np.arange(int(math.floor(total / every + 1e-9)) + 1) * every
    return np.append(times, total) if times[-1] < total - 1e-9 else times


def status_reasons(model: Model, status, worst, rate) -> list[str]:
    """One line per patient saying why its solve is flagged ('' when it succeeded)."""
    out = []
    for s, w, r in zip(np.atleast_1d(status), np.atleast_1d(worst), np.atleast_1d(rate)):
        if s == 0:
            out.append("")
        elif s == NO_STEADY_STATE:
            out.append(f"no steady state at the inputs at rest: {model.state_names[int(w)]} still moves "
                       f"{float(r):.2g} of its size per day after the search")
        else:
            out.append({1: "the solver ran out of steps (stiff or blowing-up dynamics)",
                        2: "the solver failed (step size collapsed or Newton iterations diverged)",
                        3: "the trajectory is not finite"}.get(int(s), STATUS_MEANINGS[int(s)]))
    return out


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
            state at its inputs at rest (`physiotwin.steady.settle`); ``"organs"`` from
            the organs' own initial states. Default: ``"steady"`` when organs are coupled
            (each organ's own initial state is its equilibrium only at its default inputs).
    """

    model: Model
    times: Float[Array, " time"]
    inputs: Inputs
    stepping: Adaptive
    start: datetime | None = eqx.field(static=True)
    rest: Float[Array, " signal"] | None

    def __init__(self, organs, timeline=None, duration=None, *, minutes=None, hours=None, days=None,
                 every: float = 5.0, solver=None, rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int | None = None, adjoint=None, initial: str | None = None):
        require_x64()
        self.model = organs if isinstance(organs, Model) else compose(organs)
        total = _duration_minutes(duration, hours, days, minutes)
        self.times = jnp.asarray(_output_times(total, every))
        tl = _as_timeline(timeline)
        self.inputs = piecewise_inputs(self.model, tl, total)
        stiff = any(o.stiff for o in self.model.organs)
        solver = (diffrax.Kvaerno5() if stiff else diffrax.Tsit5()) if solver is None else solver
        # budget: generous per simulated day and per breakpoint, and static (no retrace per scenario)
        self.stepping = Adaptive(
            solver, jnp.asarray(rtol, dtype=float), jnp.asarray(atol, dtype=float), self.model.state_scales,
            int(max_steps) if max_steps is not None else 4096 * max(1, math.ceil(total / 1440.0)),
            max_step(self.model, solver), diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint)
        initial = ("steady" if self.model.coupled else "organs") if initial is None else initial
        if initial not in ("steady", "organs"):
            raise SimulationError(f"initial must be 'steady' or 'organs', not {initial!r}")
        # the inputs at rest: what the signals are when the timeline holds no event at all
        self.rest = jnp.asarray(compile_signals(Timeline.empty(), self.model.signal_names, total)[1][0]) \
            if initial == "steady" else None
        self.start = tl.start

    solver = property(lambda self: self.stepping.solver)
    rtol = property(lambda self: self.stepping.rtol)
    atol = property(lambda self: self.stepping.atol)
    max_steps = property(lambda self: self.stepping.max_steps)
    adjoint = property(lambda self: self.stepping.adjoint)

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
    def solve(self, theta: Float[Array, "patient param"], reasons: bool = False):
        """Raw batched solve: ``(states[P,T,S], outputs[P,T,O], status[P], steps[P])``, and with
        ``reasons`` also ``(worst[P], rate[P])``: the state that kept moving when no steady
        state was found (see `status_reasons`).

        With an explicit solver all patients step together; if that shared solve
        fails (``max_steps`` or a solver failure, e.g. one patient too stiff), the
        batch is solved again with per-patient step sizes so that only the failing
        patients are flagged. Implicit solvers always use per-patient steps."""
        args = (self.model, self.stepping, theta, self.inputs, self.times, self.rest)
        implicit = self.stepping.implicit
        mesh = _patient_mesh(theta.shape[0])
        result = _solve_batch(*args, mesh=mesh, per_patient=implicit)
        status = result[2]
        if (not implicit and theta.shape[0] > 1 and not isinstance(status, jax.core.Tracer)
                and bool(jnp.any((status == 1) | (status == 2)))):
            result = _solve_batch(*args, per_patient=True)
        return result if reasons else result[:4]

    def __call__(self, params: Mapping[str, Array]) -> dict[str, Array]:
        """Trajectories of every state and output for one patient, by qualified name."""
        ys, outs = self.solve(self._theta(params)[None])[:2]
        traj = {n: ys[0, :, i] for i, n in enumerate(self.model.state_names)}
        traj.update({n: outs[0, :, i] for i, n in enumerate(self.model.output_names)})
        return traj

    # ------------------------------------------------------------- to xarray
    def to_dataset(self, names: Sequence[str], theta: np.ndarray, single: bool, result) -> xr.Dataset:
        from . import __version__

        ys, outs, status, steps, worst, rate = (np.asarray(a) for a in result)
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
            attrs={"long_name": "solver status per patient", "flag_meanings": " ".join(STATUS_MEANINGS),
                   "flag_values": np.arange(len(STATUS_MEANINGS), dtype=np.int8)})
        data_vars["solver_steps"] = xr.Variable(
            () if single else ("patient",), steps[0] if single else steps,
            attrs={"long_name": "accepted + rejected solver steps (shared by the patients solved together)",
                   "units": "1"})
        reasons = np.asarray(status_reasons(model, status, worst, rate), dtype=object)
        data_vars["solver_message"] = xr.Variable(
            () if single else ("patient",), reasons[0] if single else reasons,
            attrs={"long_name": "why the solve of a patient is flagged (empty when it succeeded)"})
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
            "initial_state": ("composed steady state at the inputs at rest" if self.rest is not None
                              else "organs' initial states"),
            "Conventions": "CF-1.10",
        }
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)


@eqx.filter_jit
def _closed_loop_batch(model, stepping, theta, inputs: Inputs, setups, rest, every: int):
    """Every patient under its bound controller (`physiotwin.control.closed_loop`), from
    its start: ``(ys[P,T,S], outs[P,T,O], status[P], worst[P], rate[P])`` at 0, every, ..."""
    from .control import closed_loop
    from .integrate import ModelField

    y0, started, worst, rate = _start(model, theta, inputs, jnp.asarray(0.0), rest)

    def one(th, y, st):
        field = ModelField(model, th)
        seen, _ = closed_loop(field, stepping, y, inputs.values, inputs.resets, st.controller, st.settings, st.feed,
                              st.reading, st.signal, every, foresee=st.foresee)
        first = jnp.concatenate([field.outputs(jnp.asarray(0.0), y, inputs.values[0]), y])
        return jnp.concatenate([first[None], seen])

    seen = jax.vmap(one)(theta, y0, setups)
    O = len(model.output_names)
    ys, outs = seen[..., O:], seen[..., :O]
    finite = jnp.all(jnp.isfinite(seen), axis=(1, 2))
    status = jnp.where(started, jnp.where(finite, 0, 3), NO_STEADY_STATE)
    return ys, outs, status, worst, rate


def simulate_controlled(sim: Simulator, names, theta: np.ndarray, single: bool, timeline, controller: str,
                        every: float) -> xr.Dataset:
    """`simulate` under a closed-loop controller (fixed minute steps; see `physiotwin.control`)."""
    from .control import controlled, setup
    from .inputs import minute_inputs
    from .integrate import minute_steps

    tl = _as_timeline(timeline)
    minutes = int(round(float(sim.times[-1])))
    if abs(minutes - float(sim.times[-1])) > 1e-9 or minutes % int(every) or float(every) != int(every):
        raise SimulationError("with --controller, the duration and --every must be whole minutes, the duration a "
                              "multiple of --every")
    day0 = tl.minute_of_day
    ctl, tl_c = controlled(controller, sim.model, tl, minutes, day0)
    inputs = minute_inputs(sim.model, tl_c, minutes)
    setups = [setup(ctl, sim.model, th, tl_c, minutes, day0) for th in theta]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *setups)
    stepping = minute_steps(sim.model)
    ys, outs, status, worst, rate = _closed_loop_batch(sim.model, stepping, jnp.asarray(theta), inputs, stacked,
                                                       sim.rest, int(every))
    steps = jnp.full(status.shape, minutes * stepping.substeps)
    ds = sim.to_dataset(names, theta, single, (ys, outs, status, steps, worst, rate))
    ds.attrs.update(controller=controller, solver=f"{type(stepping.solver).__name__}, {stepping.substeps} fixed "
                    "steps per minute (closed loop)", step_size_controller="none (fixed steps)")
    return ds


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
    controller: str | None = None,
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
        controller: a closed-loop controller (``register_controllers``) that takes over
            part of the timeline's inputs, run in the simulation at its sampling period
            (`physiotwin.control`; fixed minute steps).

    Returns:
        An `xarray.Dataset` with dims ``time`` (and ``patient`` unless a single name
        was given), one variable per state and output named ``organ.var``, and a
        per-patient ``solver_status`` flag. A patient whose solve fails is flagged;
        the others' results stand.
    """
    sim = Simulator(organs, timeline, duration, minutes=minutes, hours=hours, days=days, every=every,
                    solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, initial=initial)
    names, theta, single = resolve_patients(sim.model, patients)
    if controller is not None:
        return simulate_controlled(sim, names, theta, single, timeline, controller, every)
    result = sim.solve(jnp.asarray(theta), reasons=True)
    return sim.to_dataset(names, theta, single, result)
