"""Closed-loop control inside a simulation: a controller reads a sensor and sets an input.

A `Controller` (registered by plugins through ``register_controllers``) declares the
observation kind it reads (its sensor: the output that kind's observation model reads),
the input signal its action sets, the timeline kinds it takes over (their rows are
dropped: the controller replaces that part of the therapy) and its sampling period.
Every ``period`` minutes it gets the sensor's value (noise-free) and what it may know
of the timeline at that minute (`Controller.prepare`, e.g. an announced meal), and
returns an action that is added to its signal until its next decision.

`closed_loop` integrates minute by minute with the fixed-step scheme of calibration
(`physiotwin.integrate.FixedSteps`), so a twin's replay and a controlled simulation use
the same numerics. A model-predictive controller gets a `Plant`: the model itself,
from the current state, to predict the sensor under candidate actions.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .extensions import Controller, Plant
from .integrate import AbstractField, FixedSteps

__all__ = ["Controller", "Plant", "closed_loop", "ControlSetup", "controlled", "setup"]


def closed_loop(field: AbstractField, stepping: FixedSteps, y0, values, resets, controller: Controller, settings,
                feed, reading: int, signal: int, every: int, jumps=None, nonneg=None, foresee=None):
    """Integrate minute by minute under ``controller``. ``values``/``resets``: the minute
    inputs ``[minutes, ...]``; ``jumps[minutes, state]``: added to the state at the start
    of each minute (a replay's disturbances; None: none). Returns ``(observed[minutes //
    every, output + state], actions[minutes])``, observed at the end of every ``every``-th
    minute."""
    minutes = values.shape[0]
    foresee = jnp.ones(values.shape[1]) if foresee is None else foresee

    def minute(carry, k):
        y, state, action = carry
        t = jnp.asarray(k, dtype=values.dtype)
        if jumps is not None:
            y = y + jumps[k]
            y = jnp.where(nonneg, jnp.maximum(y, 0.0), y) if nonneg is not None else y
        u0 = values[k]

        def decide(_):
            plant = None
            if controller.horizon:
                future = jnp.broadcast_to(u0 * foresee, (controller.horizon, values.shape[1]))
                plant = Plant(field, stepping, y, t, future, signal, reading)
            return controller.act(state, t, field.outputs(t, y, u0)[reading], feed[k], settings, plant)

        state, action = jax.lax.cond(k % controller.period == 0, decide, lambda _: (state, action), None)
        u = u0.at[signal].add(action)
        y = stepping.step(field, t, field.reset(t, y, u, resets[k]), u)
        return (y, state, action), (jnp.concatenate([field.outputs(t + 1.0, y, u), y]), action)

    init = (y0, controller.init(settings), jnp.zeros((), values.dtype))
    _, (seen, actions) = jax.lax.scan(minute, init, jnp.arange(minutes))
    return seen[every - 1::every], actions


class ControlSetup(eqx.Module):
    """A controller bound to a model and a timeline: what `closed_loop` needs besides the
    model and its inputs."""

    controller: Controller = eqx.field(static=True)
    settings: dict
    feed: jax.Array
    reading: int = eqx.field(static=True)
    signal: int = eqx.field(static=True)
    foresee: jax.Array


def controlled(name: str, model, tl, minutes: int, day0: float):
    """``(controller, its timeline)`` for ``tl``; `WiringError` when the controller is unknown
    or the composition cannot host it (no input for its signal, no output for its sensor)."""
    from .errors import WiringError
    from .registry import controllers, observation_models

    installed = controllers()
    if name not in installed:
        raise WiringError(f"unknown controller {name!r}; installed controllers: {', '.join(installed) or 'none'}")
    ctl = installed[name]()
    signals = [n.split(".", 1)[1] for n in model.signal_names]
    if ctl.signal not in signals:
        raise WiringError(f"controller {name!r} sets the signal {ctl.signal!r}, which the composition "
                          f"({', '.join(model.organ_names)}) has no input for")
    sensor = [cls for cls in observation_models().values() if cls.kind == ctl.kind]
    if not sensor:
        raise WiringError(f"controller {name!r} reads {ctl.kind!r}, which no installed observation model explains")
    sensor[0].create().output_name(model)  # raises when the composition has no such output
    return ctl, ctl.timeline(tl)


def setup(ctl: Controller, model, theta, tl, minutes: int, day0: float) -> ControlSetup:
    """Bind ``ctl`` to one patient (``theta``) and the timeline it runs on."""
    from .registry import observation_models

    signals = [n.split(".", 1)[1] for n in model.signal_names]
    sensor = [cls for cls in observation_models().values() if cls.kind == ctl.kind][0].create()
    settings = {k: jnp.asarray(float(v)) for k, v in ctl.configure(model, np.asarray(theta), tl).items()}
    foresee = jnp.asarray([0.0 if s in ctl.future_unknown else 1.0 for s in signals])
    return ControlSetup(ctl, settings, jnp.asarray(ctl.prepare(tl, minutes, day0)),
                        list(model.output_names).index(sensor.output_name(model)), signals.index(ctl.signal), foresee)
