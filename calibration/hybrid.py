"""Hybrid models: a mechanistic composition plus neural residual terms.

Each organ declares residual slots (`physiotwin.Residual`): a state whose derivative
may receive a learned term. `Hybrid` attaches one small MLP per slot (equinox) and
evaluates

    dy/dt = f_mech(t, y, theta, u) + sum_slots e_state * scale * net(z)

where ``z`` are the slot's features (organ states and outputs, normalised by their
mean and spread over the mechanistic trajectory of the calibration record) plus the
time of day (two harmonics: sin and cos of one and two cycles a day), so a network
can learn daily patterns the log misses (habitual unlogged snacks). Every net's last layer starts at exactly zero, so an
untrained hybrid *is* the mechanism (bit for bit, tested). This is the universal
differential equation of Rackauckas et al. (arXiv:2001.04385, 2020) restricted to
the places an organ author allows.

A slot that declares `rates` (`physiotwin.Residual`) *modulates* rates instead: its net
gives a relative change ``m`` and the hybrid adds ``sign * m * output`` to each named
state's derivative, so a time-of-day-dependent sensitivity keeps the mechanism's shape.

Population hybrids (`physiotwin.calibration.population`) share one set of nets among
patients; each patient has a low-dimensional conditioning vector ``c`` that every net
also sees (de Rooij et al., npj Syst Biol Appl 2025). A per-patient hybrid has no
conditioning (``c`` of length 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..composer import Model
from ..errors import WiringError
from ..units import same_dimension
from ..integrate import AbstractField

__all__ = ["Slot", "Hybrid", "slots_of", "TwinField"]

DAY = 1440.0


@dataclass(frozen=True)
class Slot:
    """A residual slot resolved in a composition (indices into the flat vectors)."""

    name: str  # organ.slot
    state: int  # index of the state whose derivative receives the term
    scale: float
    state_features: tuple[int, ...]
    output_features: tuple[int, ...]
    feature_names: tuple[str, ...]
    rates: tuple[tuple[int, int, float], ...] = ()  # (state, output, sign) of a modulating slot

    @property
    def modulates(self) -> bool:
        return bool(self.rates)


def slots_of(model: Model, only: Sequence[str] | None = None) -> tuple[Slot, ...]:
    """Resolve every organ's `Residual` declarations in ``model`` (``only``: these slots,
    by qualified name ``organ.slot``)."""
    out = []
    for organ in model.organs:
        for r in getattr(organ, "residuals", ()):
            q = f"{organ.name}.{r.state}"
            if q not in model.state_names:
                raise WiringError(f"organ {organ.name!r}: residual slot {r.name!r} acts on unknown state {r.state!r}")
            sf, of, names = [], [], []
            for f in r.features:
                qf = f"{organ.name}.{f}"
                if qf in model.state_names:
                    sf.append(model.state_names.index(qf))
                elif qf in model.output_names:
                    of.append(model.output_names.index(qf))
                else:
                    raise WiringError(f"organ {organ.name!r}: residual slot {r.name!r} feature {f!r} is neither a "
                                      f"state nor an output of the organ")
                names.append(qf)
            out.append(Slot(f"{organ.name}.{r.name}", model.state_names.index(q), float(r.scale), tuple(sf),
                            tuple(of), tuple(names), _rates(model, organ, r)))
    if only is not None:
        unknown = sorted(set(only) - {s.name for s in out})
        if unknown:
            raise WiringError(f"unknown residual slot(s) {', '.join(unknown)}; the composition declares "
                              f"{', '.join(s.name for s in out) or 'none'}")
        out = [s for s in out if s.name in only]
    return tuple(out)


def _rates(model: Model, organ, r) -> tuple[tuple[int, int, float], ...]:
    """Indices of a modulating slot's ``(state, output, sign)``, units checked."""
    out = []
    for state, output, sign in r.rates:
        qs, qo = f"{organ.name}.{state}", f"{organ.name}.{output}"
        if qs not in model.state_names or qo not in model.output_names:
            raise WiringError(f"organ {organ.name!r}: residual slot {r.name!r} modulates {output!r} into {state!r}, "
                              f"but the organ has no such {'state' if qs not in model.state_names else 'output'}")
        per_min = f"({model.declaration(qs).unit}) / min"
        if not same_dimension(model.declaration(qo).unit, per_min):
            raise WiringError(f"organ {organ.name!r}: residual slot {r.name!r}: output {output!r} is in "
                              f"{model.declaration(qo).unit}, not in the unit of {state!r} per minute ({per_min})")
        out.append((model.state_names.index(qs), model.output_names.index(qo), float(sign)))
    return tuple(out)


def _zero_last_layer(mlp: eqx.nn.MLP) -> eqx.nn.MLP:
    last = mlp.layers[-1]
    mlp = eqx.tree_at(lambda m: m.layers[-1].weight, mlp, jnp.zeros_like(last.weight))
    return eqx.tree_at(lambda m: m.layers[-1].bias, mlp, jnp.zeros_like(last.bias))


class Hybrid(eqx.Module):
    """``model`` plus one MLP per residual slot. Build with `Hybrid.create`."""

    model: Model = eqx.field(static=True)
    slots: tuple[Slot, ...] = eqx.field(static=True)
    nets: tuple[eqx.nn.MLP, ...]
    cond: Array  # the patient's conditioning vector (length 0 for a per-patient hybrid)
    # feature normalisation (mean, spread) per slot: fixed before training, not trained
    mean: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    spread: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)

    @classmethod
    def create(cls, model: Model, key: Array, width: int = 16, depth: int = 2,
               ys: np.ndarray | None = None, outs: np.ndarray | None = None,
               only: Sequence[str] | None = None, conditioning: int = 0) -> "Hybrid":
        """Nets with zero output; features normalised by ``ys[T,S]``/``outs[T,O]`` statistics
        (a mechanistic trajectory), or unnormalised when those are not given. ``only``: the
        slots to use (default all); ``conditioning``: length of the conditioning vector."""
        slots = slots_of(model, only)
        keys = jax.random.split(key, max(1, len(slots)))
        nets, mean, spread = [], [], []
        for slot, k in zip(slots, keys):
            n_in = len(slot.feature_names) + 4 + conditioning
            mlp = eqx.nn.MLP(n_in, 1, width, depth, activation=jax.nn.tanh, key=k, dtype=jnp.float64)
            nets.append(_zero_last_layer(mlp))
            if ys is None:
                mean.append((0.0,) * len(slot.feature_names))
                spread.append((1.0,) * len(slot.feature_names))
            else:
                f = np.concatenate([np.asarray(ys)[:, list(slot.state_features)],
                                    np.asarray(outs)[:, list(slot.output_features)]], axis=1)
                mean.append(tuple(float(v) for v in np.mean(f, axis=0)))
                sd = np.std(f, axis=0)
                spread.append(tuple(float(max(v, 1e-6 * max(1.0, abs(m)))) for v, m in zip(sd, np.mean(f, axis=0))))
        return cls(model, slots, tuple(nets), jnp.zeros((conditioning,), jnp.float64), tuple(mean), tuple(spread),
                   width, depth)

    def inputs(self, t: Array, y: Float[Array, " state"], outs: Float[Array, " output"], day0: Array
               ) -> tuple[Array, ...]:
        """Each slot's network input: its normalised features, the clock (sin and cos of one
        and two cycles a day) and the conditioning vector."""
        phase = 2.0 * math.pi * (t + day0) / DAY
        clock = jnp.stack([jnp.sin(phase), jnp.cos(phase), jnp.sin(2.0 * phase), jnp.cos(2.0 * phase)])
        out = []
        for slot, m, s in zip(self.slots, self.mean, self.spread):
            f = jnp.concatenate([y[jnp.asarray(slot.state_features, dtype=int)],
                                 outs[jnp.asarray(slot.output_features, dtype=int)]])
            z = (f - jnp.asarray(m)) / jnp.asarray(s)
            out.append(jnp.concatenate([z, clock.astype(z.dtype), self.cond.astype(z.dtype)]))
        return tuple(out)

    def terms(self, t: Array, y: Float[Array, " state"], outs: Float[Array, " output"], day0: Array
              ) -> Float[Array, " slot"]:
        """The residual terms, one per slot: state unit per minute, or for a modulating slot
        the relative change (1)."""
        if not self.slots:
            return jnp.zeros((0,), y.dtype)
        return jnp.stack([slot.scale * net(x)[0] for slot, net, x in
                          zip(self.slots, self.nets, self.inputs(t, y, outs, day0))])

    def evaluate(self, t, y, theta, u, day0):
        """``(dy, outputs, terms)``: the hybrid derivative, the model outputs and the residual terms."""
        dy, outs = self.model.evaluate(t, y, theta, u)
        r = self.terms(t, y, outs, day0)
        for i, slot in enumerate(self.slots):
            if slot.modulates:
                for state, output, sign in slot.rates:
                    dy = dy.at[state].add(sign * r[i] * outs[output])
            else:
                dy = dy.at[slot.state].add(r[i])
        return dy, outs, r

    def l2(self) -> Array:
        """Sum of squared weights of all nets (biases excluded)."""
        total = jnp.zeros(())
        for net in self.nets:
            for layer in net.layers:
                total = total + jnp.sum(layer.weight ** 2)
        return total

    def spec(self) -> dict:
        """JSON-able description, enough to rebuild the same structure for loading."""
        return {"slots": [s.name for s in self.slots], "features": [list(s.feature_names) for s in self.slots],
                "width": self.width, "depth": self.depth, "mean": [list(m) for m in self.mean],
                "spread": [list(s) for s in self.spread], "conditioning": int(self.cond.shape[0])}

    @classmethod
    def from_spec(cls, model: Model, spec: dict) -> "Hybrid":
        h = cls.create(model, jax.random.PRNGKey(0), spec["width"], spec["depth"], only=spec["slots"],
                       conditioning=int(spec.get("conditioning", 0)))
        if [s.name for s in h.slots] != list(spec["slots"]):
            raise WiringError(f"the twin's residual slots {spec['slots']} do not match the composition's "
                              f"{[s.name for s in h.slots]}")
        return cls(model, h.slots, h.nets, h.cond, tuple(tuple(float(v) for v in m) for m in spec["mean"]),
                   tuple(tuple(float(v) for v in s) for s in spec["spread"]), spec["width"], spec["depth"])

    def with_conditioning(self, cond) -> "Hybrid":
        """The same nets with another conditioning vector."""
        return eqx.tree_at(lambda h: h.cond, self, jnp.asarray(cond, jnp.float64))


class TwinField(AbstractField):
    """The vector field of a twin: the composition with parameters ``theta``, plus the
    residual networks of ``hybrid`` when there is one (``day0``: minute of the day at t = 0)."""

    model: Model
    theta: Array
    hybrid: Hybrid | None
    day0: Array

    def __call__(self, t, y, u):
        if self.hybrid is None:
            return self.model.evaluate(t, y, self.theta, u)[0]
        return self.hybrid.evaluate(t, y, self.theta, u, self.day0)[0]

    def outputs(self, t, y, u):
        return self.model.evaluate(t, y, self.theta, u)[1]

    def evaluate(self, t, y, u):
        """``(dy, outputs, residual terms)``; no terms without networks."""
        if self.hybrid is None:
            dy, outs = self.model.evaluate(t, y, self.theta, u)
            return dy, outs, jnp.zeros((0,), y.dtype)
        return self.hybrid.evaluate(t, y, self.theta, u, self.day0)

    def reset(self, t, y, u, mask):
        return self.model.reset(t, y, self.theta, u, mask) if any(self.model.reset_columns) else y
