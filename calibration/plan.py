"""Treatment optimisation through a calibrated twin, by gradients.

The twin replays its record (`physiotwin.calibration.whatif`) with the treatment
settings the plugins offer (`physiotwin.Control`: each a set of multipliers of part of
an input signal, bounded as a safety limit) changed, and the multipliers are optimised
(BFGS, optimistix) for a goal (`physiotwin.Goal`: a smooth score of one observed kind's
series) under limits on other goals (``{name: (low, high)}``), with quadratic
penalties.

**Scored on the record.** Each goal is scored on the readings the record holds plus the
change the twin predicts for the plan (the fitted trajectory fills gaps), so the plan
starts from what really happened, including lows the fit may have smoothed away.

**Robust.** Besides the fitted parameters, ``samples`` draws from the twin's Laplace
posterior replay every candidate plan (as in a what-if, each draw predicts the change,
added to the fitted trajectory); the objective is their mean and every draw must meet
the limits, so a plan is not tuned to one point estimate.

A limit that the best plan found still misses is reported as infeasible
(`CalibrationError` naming it); nothing is written then.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import CalibrationError
from ..inputs import Inputs
from .data import readings_on_grid, record_minutes
from .hybrid import TwinField
from .problem import substeps
from .whatif import Plan, corrected_inputs, draws_of, plan_of, replay, window_layout

__all__ = ["PlanResult", "optimize_plan", "TOLERANCE"]

TOLERANCE = 0.05  # a limit is met when within this much of its bound (in the goal's unit)
PENALTY = 20.0  # weight of a squared limit violation (goal units^2) against the objective
SHRINK = 0.5  # cost of moving a multiplier (per unit of its unbounded x^2, in the goal's unit): a change must buy its keep


@dataclass
class PlanResult:
    """The optimised settings and what the twin predicts for them."""

    controls: dict[str, np.ndarray]  # multipliers per control
    described: dict[str, dict]  # the controls' own description of them
    objective: str
    limits: dict[str, tuple[float, float]]
    before: dict[str, dict[str, float]]  # goal -> {"mode", "low", "high"} (5-95 % over the draws)
    after: dict[str, dict[str, float]]
    samples: int
    steps: int
    seconds: float
    history: list[float] = field(default_factory=list)


class _Layout(eqx.Module):
    component: jax.Array  # [control, minute]
    index: jax.Array  # [control, minute] (-1: none) into that control's multipliers
    offset: tuple[int, ...] = eqx.field(static=True)
    size: tuple[int, ...] = eqx.field(static=True)
    column: tuple[int, ...] = eqx.field(static=True)
    log_low: tuple[float, ...] = eqx.field(static=True)
    log_high: tuple[float, ...] = eqx.field(static=True)


def multipliers(x, layout: _Layout) -> list:
    """Each control's multipliers from the unbounded ``x`` (``x = 0``: no change)."""
    out = []
    for off, n, lo, hi in zip(layout.offset, layout.size, layout.log_low, layout.log_high):
        shift = math.log(-lo / (hi - lo)) - math.log(hi / (hi - lo))  # sigmoid(shift) puts 0 at log m = 0
        out.append(jnp.exp(lo + (hi - lo) * jax.nn.sigmoid(x[off:off + n] + shift)))
    return out


def _apply(x, values, layout: _Layout):
    for c, m in enumerate(multipliers(x, layout)):
        factor = jnp.concatenate([m, jnp.ones(1)])[layout.index[c]]
        values = values.at[:, layout.column[c]].add(layout.component[c] * (factor - 1.0))
    return values


def _with_values(plan: Plan, values) -> Plan:
    W, L = plan.win.values.shape[:2]
    return eqx.tree_at(lambda p: (p.win.values, p.tail.values), plan,
                       (values[:W * L].reshape((W, L) + values.shape[1:]), values[W * L:]))


class _Problem(eqx.Module):
    model: object = eqx.field(static=True)
    hybrid: object
    thetas: jax.Array  # [S, P]: the fitted values first, then the draws
    day0: jax.Array
    plan: Plan
    values: jax.Array  # [minute, signal] the record's inputs (corrected)
    base: jax.Array  # [S, T] each draw's replay of the record (the kind's column)
    fitted: jax.Array  # [T] the record's readings of the kind (the fitted trajectory in gaps)
    nonneg: jax.Array
    layout: _Layout
    column: int = eqx.field(static=True)

    def predicted(self, x):
        plan = _with_values(self.plan, _apply(x, self.values, self.layout))
        stepping = substeps(self.model)

        def one(theta):
            field = TwinField(self.model, theta, self.hybrid, self.day0)
            return replay(field, stepping, plan, self.nonneg, 5)[:, self.column]

        runs = jax.vmap(one)(self.thetas)
        return self.fitted[None] + runs - self.base  # the change of each draw, on the fitted trajectory


def _goal_values(goals, pred, width_scale: float):
    return {g.name: jax.vmap(lambda p: g.value(p, g.width * width_scale))(pred) for g in goals}


def _loss(x, prob: _Problem, objective, limits):
    """The objective (sign: minimised) averaged over the draws, plus the limits' penalties."""
    pred = prob.predicted(x)
    sign = -1.0 if objective.sense == "max" else 1.0
    total = sign * jnp.mean(jax.vmap(lambda p: objective.value(p, objective.width))(pred))
    for goal, (low, high) in limits:
        v = jax.vmap(lambda p: goal.value(p, goal.width))(pred)
        total = total + PENALTY * jnp.mean(jnp.maximum(v - high, 0.0) ** 2 + jnp.maximum(low - v, 0.0) ** 2)
    return total + SHRINK * jnp.sum(x ** 2)


@eqx.filter_jit
def _solve(prob: _Problem, objective, limits, steps: int):
    """BFGS (optimistix) from no change; returns the multipliers' unbounded ``x``, the
    loss there and the number of steps taken."""
    import optimistix as optx

    x0 = jnp.zeros(sum(prob.layout.size))
    sol = optx.minimise(lambda x, _: _loss(x, prob, objective, limits), optx.BFGS(rtol=1e-5, atol=1e-5), x0,
                        max_steps=steps, throw=False)
    return sol.value, _loss(sol.value, prob, objective, limits), sol.stats["num_steps"]


@eqx.filter_jit
def _predicted(x, prob: _Problem):
    return prob.predicted(x)


def _layout(twin, names: Sequence[str], record, minutes: int, day0: float) -> _Layout:
    from ..registry import controls

    installed = controls()
    signals = [n.split(".", 1)[1] for n in twin.model.signal_names]
    comps, index, off, size, cols, lows, highs = [], [], [], [], [], [], []
    for name in names:
        if name not in installed:
            raise CalibrationError(f"unknown control {name!r}; installed controls: {', '.join(installed) or 'none'}")
        c = installed[name]
        if c.signal not in signals:
            raise CalibrationError(f"control {name!r} changes the signal {c.signal!r}, which the twin's composition "
                                   f"({', '.join(twin.model.organ_names)}) has no input for")
        comp, idx, n = c.layout(record, minutes, day0)
        if n == 0 or not np.any(np.asarray(comp)[np.asarray(idx) >= 0] != 0):
            raise CalibrationError(f"control {name!r}: the record has nothing it could change ({c.description})")
        comps.append(np.asarray(comp, float))
        index.append(np.where(np.asarray(idx) >= 0, idx, n).astype(np.int32))
        off.append(sum(size))
        size.append(int(n))
        cols.append(signals.index(c.signal))
        lows.append(math.log(c.bounds[0]))
        highs.append(math.log(c.bounds[1]))
    return _Layout(jnp.asarray(np.stack(comps)), jnp.asarray(np.stack(index)), tuple(off), tuple(size), tuple(cols),
                   tuple(lows), tuple(highs))


def _goals_of(twin, objective: str, limits: Mapping[str, tuple[float, float]]):
    from ..registry import goals

    installed = goals()
    for name in [objective, *limits]:
        if name not in installed:
            raise CalibrationError(f"unknown goal {name!r}; installed goals: {', '.join(installed) or 'none'}")
        if installed[name].kind not in twin.kinds:
            raise CalibrationError(f"goal {name!r} scores {installed[name].kind!r} readings, which this twin does not "
                                   f"observe ({', '.join(twin.kinds)})")
    kinds = {installed[n].kind for n in [objective, *limits]}
    if len(kinds) > 1:
        raise CalibrationError(f"the objective and limits score different kinds ({', '.join(sorted(kinds))}); "
                               f"give goals of one kind")
    for name, (low, high) in limits.items():
        if not low <= high:
            raise CalibrationError(f"limit on {name!r}: the lower bound {low} is above the upper bound {high}")
    return installed[objective], [(installed[n], limits[n]) for n in limits]


def _summary(goal_list, pred) -> dict[str, dict[str, float]]:
    out = {}
    for g in goal_list:
        v = np.asarray(jax.vmap(lambda p: g.value(p, 1e-6))(jnp.asarray(pred)))
        out[g.name] = {"mode": float(v[0]), "low": float(np.quantile(v, 0.05)), "high": float(np.quantile(v, 0.95))}
    return out


def _problem(twin, record, minutes: int, layout: _Layout, samples: int, seed: int, kind: str) -> _Problem:
    starts, ends, L = window_layout(twin, "twin")
    fitted = {k: np.asarray(v) for k, v in twin.result.corrections.items()}
    inputs: Inputs = corrected_inputs(twin.model, record, record, minutes, fitted)
    plan = plan_of(inputs, starts, ends, L)
    thetas = [twin.theta("twin")[None]]
    if samples:
        thetas.append(draws_of(twin, "twin", samples, 1.0, np.random.default_rng(seed)))
    om = twin.observations[twin.kinds.index(kind)]
    column = list(twin.model.output_names).index(om.output_name(twin.model))
    nonneg = jnp.asarray([twin.model.declaration(n).nonnegative for n in twin.model.state_names])
    prob = _Problem(twin.model, twin.hybrid, jnp.asarray(np.concatenate(thetas)), jnp.asarray(record.minute_of_day),
                    plan,
                    jnp.asarray(inputs.values), jnp.zeros(1), jnp.zeros(1), nonneg, layout, column)
    runs = np.asarray(_predicted(jnp.zeros(sum(layout.size)), prob))  # fitted + run - 0 = run
    # the goals are scored on what was read plus the predicted change (the fitted trajectory
    # where a reading is missing): a fit that misses some lows must not hide them from the plan
    read = readings_on_grid(record, kind, minutes)[4::5][:runs.shape[1]]
    start = np.where(np.isfinite(read), read, runs[0])
    return eqx.tree_at(lambda p: (p.base, p.fitted), prob, (jnp.asarray(runs), jnp.asarray(start)))


def optimize_plan(twin, controls: Sequence[str], objective: str, limits: Mapping[str, tuple[float, float]],
                  samples: int = 4, steps: int = 100, seed: int = 0) -> PlanResult:
    """Optimise the multipliers of ``controls`` for ``objective`` under ``limits``."""
    from ..registry import controls as installed_controls

    t0 = time.perf_counter()
    if not controls:
        raise CalibrationError("give at least one --control")
    if samples and "twin" not in twin.result.covariance:
        raise CalibrationError("--samples needs the twin's posterior, which this twin does not have; calibrate it "
                               "again or pass --samples 0")
    record = twin.training_timeline()
    if record is None or "twin" not in twin.result.windows:
        raise CalibrationError("this twin was saved before what-if replays were supported; calibrate it again")
    goal, limit_list = _goals_of(twin, objective, limits)
    minutes = record_minutes(record) - record_minutes(record) % 5
    layout = _layout(twin, list(dict.fromkeys(controls)), record, minutes, record.minute_of_day)
    prob = _problem(twin, record, minutes, layout, int(samples), int(seed), goal.kind)
    best_x, best, n_steps = _solve(prob, goal, tuple(limit_list), int(steps))
    if not np.isfinite(float(best)):
        raise CalibrationError("the plan's optimisation diverged (non-finite loss): the twin's replay fails for "
                               "some multipliers; try fewer controls")
    history = [float(best)]
    scored = [goal] + [g for g, _ in limit_list if g.name != goal.name]
    before = _summary(scored, _predicted(jnp.zeros_like(best_x), prob))
    after = _summary(scored, _predicted(best_x, prob))
    for g, (low, high) in limit_list:
        v = after[g.name]["mode"]
        worst = after[g.name]["high"] if high < math.inf else after[g.name]["low"]
        if not (low - TOLERANCE <= v <= high + TOLERANCE and low - TOLERANCE <= worst <= high + TOLERANCE):
            bound = f"<= {high:g}" if high < math.inf else f">= {low:g}"
            raise CalibrationError(
                f"infeasible limit {g.name} {bound} {g.unit}: the best plan found with {', '.join(controls)} "
                f"(multipliers within their bounds) gives {g.name} = {v:.2f} {g.unit} (5-95 % over the posterior "
                f"draws: {after[g.name]['low']:.2f} to {after[g.name]['high']:.2f}); relax the limit or allow more "
                "controls")
    mult = [np.asarray(m) for m in multipliers(best_x, layout)]
    names = list(dict.fromkeys(controls))
    inst = installed_controls()
    return PlanResult({n: m for n, m in zip(names, mult)},
                      {n: dict(inst[n].describe(m, record)) for n, m in zip(names, mult)}, objective,
                      {g.name: lim for g, lim in limit_list}, before, after, int(samples), int(n_steps),
                      time.perf_counter() - t0, history)


def apply_plan(result: PlanResult, table, start):
    """A timeline table with the plan applied by each control (`physiotwin.Control.apply`)."""
    from ..registry import controls

    inst = controls()
    for name, m in result.controls.items():
        table = inst[name].apply(table, m, start)
    return table


def plan_toml(result: PlanResult, twin_dir: str) -> str:
    """The plan as TOML text."""
    def value(v):
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, (list, tuple, np.ndarray)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, (bool, np.bool_)):
            return "true" if v else "false"
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        return repr(round(float(v), 6)) if math.isfinite(float(v)) else '"nan"'

    lines = ["# physiotwin therapy plan: settings optimised through a calibrated twin", f"twin = {value(twin_dir)}",
             f"objective = {value(result.objective)}", f"posterior_draws = {result.samples}",
             f"steps = {result.steps}", f"seconds = {value(result.seconds)}", "", "[limits]"]
    lines += [f"{n} = [{value(lo) if math.isfinite(lo) else '-inf'}, {value(hi) if math.isfinite(hi) else 'inf'}]"
              for n, (lo, hi) in result.limits.items()]
    for name, described in result.described.items():
        lines += ["", f"[controls.{name}]"] + [f"{k} = {value(v)}" for k, v in described.items()]
    for when, summary in (("before", result.before), ("after", result.after)):
        for goal, s in summary.items():
            lines += ["", f"[predicted.{when}.{goal}]"] + [f"{k} = {value(v)}" for k, v in s.items()]
    return "\n".join(lines) + "\n"
