"""The composer: many organs in, one vector field out.

`compose` reads the organs' declarations once and builds a `Model`:

1. every input is resolved to a source: another organ's output, a timeline signal,
   or its default; units are checked and conversion factors computed (pint, here,
   never inside `jit`);
2. flux contributions (outputs declared with ``flux_to``) are collected per port;
   exactly one organ owns each port;
3. algebraic outputs are ordered topologically from their declared dependencies;
   an algebraic cycle is refused with the cycle spelled out;
4. all states are flattened into one vector with a fixed index map, all parameters
   into another.

The `Model` is an `equinox.Module` whose fields are all static: it is hashable and
built once, so jitted functions taking it compile once per composition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .contract import Organ, Output
from .errors import WiringError
from .units import UnitError, conversion, parse_unit

__all__ = ["WiringError", "Model", "compose", "Connection"]


@dataclass(frozen=True)
class Connection:
    """Where one organ input gets its value from.

    ``kind`` is ``"output"`` (another organ's output), ``"timeline"`` (a timeline
    signal), or ``"default"``; ``index`` is the output's position in the model's
    output order, or the signal's column; ``scale``/``offset`` convert units.
    """

    kind: str
    source: str | None
    index: int
    scale: float = 1.0
    offset: float = 0.0


def _qualify(organ: Organ | type[Organ], var: str) -> str:
    return f"{organ.name}.{var}"


def _convert(src_unit: str, dst_unit: str, what: str) -> tuple[float, float]:
    try:
        return conversion(src_unit, dst_unit)
    except UnitError as err:
        raise WiringError(f"unit mismatch {what}: {err}") from None


class Model(eqx.Module):
    """A composed model: one vector field over one flat state vector.

    Build it with `compose`. Attributes (all static):

    - ``organs``: the organ instances, in the order given.
    - ``state_names`` / ``param_names``: qualified names (``organ.var``) of the flat
      state and parameter vectors, in order.
    - ``output_names``: qualified names of all outputs, in evaluation order.
    - ``signal_names``: the timeline signals (``timeline.x``) the model reads, i.e. the
      columns of the ``signals`` array passed to `Model.vector_field`.
    """

    organs: tuple[Organ, ...] = eqx.field(static=True)
    state_names: tuple[str, ...] = eqx.field(static=True)
    param_names: tuple[str, ...] = eqx.field(static=True)
    output_names: tuple[str, ...] = eqx.field(static=True)
    signal_names: tuple[str, ...] = eqx.field(static=True)
    signal_units: tuple[str, ...] = eqx.field(static=True)
    # per organ: (state slice start, stop), (param start, stop)
    _state_slices: tuple[tuple[int, int], ...] = eqx.field(static=True)
    _param_slices: tuple[tuple[int, int], ...] = eqx.field(static=True)
    # per organ, per input (declared order): Connection
    _inputs: tuple[tuple[Connection, ...], ...] = eqx.field(static=True)
    # per organ, per port: tuple of (output index, scale, offset)
    _ports: tuple[tuple[tuple[tuple[int, float, float], ...], ...], ...] = eqx.field(static=True)
    # evaluation plan for algebraic outputs: tuple of (organ index, output names)
    _plan: tuple[tuple[int, tuple[str, ...]], ...] = eqx.field(static=True)
    # per organ: signal columns whose change triggers Organ.reset
    reset_columns: tuple[tuple[int, ...], ...] = eqx.field(static=True)

    # ----------------------------------------------------------- introspection
    @property
    def organ_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.organs)

    def organ(self, name: str) -> Organ:
        for o in self.organs:
            if o.name == name:
                return o
        raise KeyError(name)

    def declaration(self, qualified: str):
        """The `State`/`Output`/`Param` declaration behind a qualified name."""
        organ_name, var = qualified.split(".", 1)
        organ = self.organ(organ_name)
        for group in (organ.states, organ.outputs, organ.params):
            for d in group:
                if d.name == var:
                    return d
        raise KeyError(qualified)

    def connections(self) -> dict[str, str]:
        """``{"organ.input": "where it comes from"}``, for reports and tests."""
        out = {}
        for organ, conns in zip(self.organs, self._inputs):
            for inp, c in zip(organ.inputs, conns):
                out[_qualify(organ, inp.name)] = c.source if c.kind != "default" else f"default {inp.default:g} {inp.unit}"
        return out

    @property
    def state_scales(self) -> tuple[float, ...]:
        """`State.scale` of every state, in the order of `state_names`."""
        return tuple(float(s.scale) for o in self.organs for s in o.states)

    @property
    def coupled(self) -> bool:
        """True when some organ reads another organ's output (or receives its flux)."""
        return any(c.kind == "output" for conns in self._inputs for c in conns) or any(
            contributions for organ_ports in self._ports for contributions in organ_ports)

    def nominal_params(self) -> dict[str, float]:
        return {_qualify(o, p.name): p.value for o in self.organs for p in o.params}

    # --------------------------------------------------------------- numerics
    def _split(self, vec: Array, slices, names_of) -> list[dict[str, Array]]:
        parts = []
        for organ, (a, b) in zip(self.organs, slices):
            names = [d.name for d in names_of(organ)]
            parts.append({n: vec[a + i] for i, n in enumerate(names)})
        return parts

    def _organ_inputs(self, i: int, outputs: Mapping[int, Array], signals: Array) -> dict[str, Array]:
        organ = self.organs[i]
        u: dict[str, Array] = {}
        for inp, c in zip(organ.inputs, self._inputs[i]):
            if c.kind == "output" and c.index in outputs:
                raw = outputs[c.index]
            elif c.kind == "timeline":
                raw = signals[c.index]
                # a level signal not yet set by the timeline is NaN: the input's default applies
                u[inp.name] = jnp.where(jnp.isnan(raw), inp.default, raw * c.scale + c.offset)
                continue
            else:  # default, or an output not yet computed (not an algebraic dependency)
                u[inp.name] = jnp.asarray(inp.default, dtype=signals.dtype)
                continue
            u[inp.name] = raw * c.scale + c.offset
        for port, contributions in zip(organ.ports, self._ports[i]):
            if port.builtin and not contributions:
                u[port.name] = None  # nobody replaces the owner's own term
                continue
            total = jnp.zeros((), dtype=signals.dtype)
            for k, scale, offset in contributions:
                if k in outputs:
                    total = total + outputs[k] * scale + offset
            u[port.name] = total
        return u

    def _outputs(self, t, xs, ps, signals) -> dict[int, Array]:
        """All algebraic outputs, computed in dependency order (see `compose`)."""
        out_index = {n: k for k, n in enumerate(self.output_names)}
        outputs: dict[int, Array] = {}
        for i, names in self._plan:
            organ = self.organs[i]
            _, ys = organ.rhs(t, xs[i], ps[i], self._organ_inputs(i, outputs, signals))
            for n in names:
                outputs[out_index[_qualify(organ, n)]] = jnp.asarray(ys[n], dtype=signals.dtype)
        return outputs

    def evaluate(
        self, t: Array, y: Float[Array, " state"], theta: Float[Array, " param"], signals: Float[Array, " signal"]
    ) -> tuple[Float[Array, " state"], Float[Array, " output"]]:
        """Derivatives of all states and values of all outputs at one instant.

        Arguments:
            t: time in minutes.
            y: flat state vector (order `state_names`).
            theta: flat parameter vector (order `param_names`).
            signals: timeline signal values at ``t`` (order `signal_names`).

        Returns:
            ``(dy/dt, outputs)``, outputs in the order of `output_names`.
        """
        xs = self._split(y, self._state_slices, lambda o: o.states)
        ps = self._split(theta, self._param_slices, lambda o: o.params)
        outputs = self._outputs(t, xs, ps, signals)
        dys = []
        for i, organ in enumerate(self.organs):
            dx, _ = organ.rhs(t, xs[i], ps[i], self._organ_inputs(i, outputs, signals))
            dys.extend(jnp.asarray(dx[s.name], dtype=y.dtype) for s in organ.states)
        dy = jnp.stack(dys) if dys else jnp.zeros((0,), y.dtype)
        out = jnp.stack([outputs[k] for k in range(len(self.output_names))]) if self.output_names else jnp.zeros((0,), y.dtype)
        return dy, out

    def reset(self, t: Array, y: Float[Array, " state"], theta: Float[Array, " param"],
              signals: Float[Array, " signal"], mask) -> Float[Array, " state"]:
        """Apply `Organ.reset` of every organ whose ``mask`` entry is true."""
        xs = self._split(y, self._state_slices, lambda o: o.states)
        ps = self._split(theta, self._param_slices, lambda o: o.params)
        parts = []
        for i, organ in enumerate(self.organs):
            if self.reset_columns[i]:
                new = organ.reset(t, xs[i], ps[i], self._organ_inputs(i, {}, signals))
                parts.extend(jnp.where(mask[i], jnp.asarray(new[s.name], y.dtype), xs[i][s.name]) for s in organ.states)
            else:
                parts.extend(xs[i][s.name] for s in organ.states)
        return jnp.stack(parts)

    def initial_state(self, theta: Float[Array, " param"], signals: Float[Array, " signal"],
                      t0: float = 0.0) -> Float[Array, " state"]:
        """Initial flat state from each organ's `Organ.initial_state`.

        Inputs come from the timeline at the start and from the other organs' outputs
        at their own initial states: the organs' initial states are computed again
        with those outputs until every organ has seen its partners' (one pass per
        organ), so a downstream organ starts at the steady state for its inputs.
        """
        ps = self._split(theta, self._param_slices, lambda o: o.params)
        outputs: dict[int, Array] = {}
        for _ in range(len(self.organs)):
            parts = []
            for i, organ in enumerate(self.organs):
                x0 = organ.initial_state(ps[i], self._organ_inputs(i, outputs, signals))
                missing = [s.name for s in organ.states if s.name not in x0]
                if missing:
                    raise WiringError(f"organ {organ.name!r}: initial_state() did not return {missing}")
                parts.extend(jnp.asarray(x0[s.name], dtype=theta.dtype) for s in organ.states)
            y0 = jnp.stack(parts)
            outputs = self._outputs(jnp.asarray(t0, theta.dtype), self._split(y0, self._state_slices, lambda o: o.states),
                                    ps, signals)
        return y0


# --------------------------------------------------------------------- compose
def _check_unique(organs: Sequence[Organ]) -> None:
    seen = set()
    for o in organs:
        if o.name in seen:
            raise WiringError(f"organ {o.name!r} appears twice in the composition")
        seen.add(o.name)
        for group in ("states", "params", "inputs", "outputs", "ports"):
            names = [d.name for d in getattr(o, group)]
            dup = {n for n in names if names.count(n) > 1}
            if dup:
                raise WiringError(f"organ {o.name!r} declares {group} {sorted(dup)} twice")
            for d in getattr(o, group):
                try:
                    parse_unit(d.unit)
                except UnitError as err:
                    raise WiringError(f"organ {o.name!r}, {group[:-1]} {d.name!r}: {err}") from None
        both = {d.name for d in o.inputs} & {d.name for d in o.ports}
        if both:
            raise WiringError(f"organ {o.name!r}: {sorted(both)} declared both as input and as flux port")


def _find_cycle(deps: Mapping[str, Iterable[str]]) -> list[str] | None:
    """Return one cycle in the dependency graph as a list of nodes, or None."""
    color: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        color[n] = 1
        stack.append(n)
        for m in deps.get(n, ()):
            if color.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if color.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        color[n] = 2
        return None

    for n in deps:
        if color.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


def _topological(deps: Mapping[str, Sequence[str]], order: Sequence[str]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> None:
        if n in seen:
            return
        seen.add(n)
        for m in deps.get(n, ()):
            visit(m)
        done.append(n)

    for n in order:
        visit(n)
    return done


@dataclass(frozen=True)
class _Resolved:
    """An input resolved by name, before output positions are known."""

    kind: str  # "output", "timeline" or "default"
    source: str | None
    scale: float = 1.0
    offset: float = 0.0


def _source_of_absent_organ(target: str, source: str, installed: Mapping[str, type[Organ]]) -> None:
    """An input reads an organ that is not composed: fine (its default applies) when that
    organ is installed and has the output; a wiring error when the name is misspelled."""
    organ_name, _, var = source.partition(".")
    if organ_name not in installed:
        raise WiringError(f"input {target!r} reads {source!r}, but no installed organ is called {organ_name!r} "
                          f"(installed: {', '.join(installed) or 'none'}; timeline signals are 'timeline.<name>')")
    if var not in {d.name for d in installed[organ_name].outputs}:
        raise WiringError(f"input {target!r} reads {source!r}, but organ {organ_name!r} has no output {var!r}; "
                          f"its outputs: {', '.join(d.name for d in installed[organ_name].outputs) or 'none'}")


def _resolve_input(target: str, inp, source: str | None, by_name: Mapping[str, Organ],
                   signal_units: Mapping[str, str], explicit: bool) -> _Resolved:
    from .registry import organ_classes

    if not source:
        return _Resolved("default", None)
    if source.startswith("timeline."):
        sig = source.split(".", 1)[1]
        if sig not in signal_units:
            raise WiringError(f"input {target!r} reads timeline signal {sig!r}, which no timeline kind provides; "
                              f"known signals: {', '.join(sorted(signal_units))}")
        return _Resolved("timeline", source, *_convert(signal_units[sig], inp.unit, f"between {source} and {target}"))
    src_organ, _, src_var = source.partition(".")
    if src_organ not in by_name:
        if explicit:
            raise WiringError(f"connection {target!r} <- {source!r}: organ {src_organ!r} is not in the composition")
        _source_of_absent_organ(target, source, {**organ_classes(), **{o.name: type(o) for o in by_name.values()}})
        return _Resolved("default", None)
    decl = {d.name: d for d in by_name[src_organ].outputs}.get(src_var)
    if decl is None:
        raise WiringError(f"input {target!r} reads {source!r}, but organ {src_organ!r} has no output {src_var!r}; "
                          f"its outputs: {', '.join(d.name for d in by_name[src_organ].outputs) or 'none'}")
    return _Resolved("output", source, *_convert(decl.unit, inp.unit, f"between {source} and {target}"))


def _resolve_inputs(organs, connections, signal_units, by_name) -> tuple[list[list[_Resolved]], list[str]]:
    resolved, used_signals = [], []
    for o in organs:
        row = []
        for inp in o.inputs:
            target = _qualify(o, inp.name)
            r = _resolve_input(target, inp, connections.get(target, inp.source), by_name, signal_units,
                               target in connections)
            if r.kind == "timeline" and r.source.split(".", 1)[1] not in used_signals:
                used_signals.append(r.source.split(".", 1)[1])
            row.append(r)
        resolved.append(row)
    return resolved, used_signals


def _pool_owners(organs: Sequence[Organ]) -> dict[str, int]:
    """``{"organ.port": organ index}``; refuses two owners of one physical pool."""
    owners: dict[str, int] = {}
    pools: dict[str, str] = {}
    for i, o in enumerate(organs):
        for port in o.ports:
            owners[_qualify(o, port.name)] = i
            if port.pool:
                if port.pool in pools:
                    raise WiringError(f"pool {port.pool!r} is owned by two organs: port {pools[port.pool]!r} "
                                      f"and port {_qualify(o, port.name)!r}; compose only one of them")
                pools[port.pool] = _qualify(o, port.name)
    return owners


def _port_contributions(organs, decl_outputs, q_out, owners, by_name) -> dict[str, list[tuple[str, float, float]]]:
    """``{"organ.port": [(contributing output, scale, offset)]}`` for every port that receives flux."""
    contributions: dict[str, list[tuple[str, Output]]] = {}
    for (i, out), q in zip(decl_outputs, q_out):
        if out.flux_to:
            contributions.setdefault(out.flux_to, []).append((q, out))
    result = {}
    for port_q, items in contributions.items():
        if port_q not in owners:
            # a flux into an organ that is not composed goes nowhere (each organ runs alone),
            # but a port name that the composed organ of that name does not declare is a typo
            owner_name = port_q.split(".", 1)[0]
            if owner_name in by_name:
                raise WiringError(f"output(s) {', '.join(q for q, _ in items)} push into {port_q!r}, "
                                  f"but organ {owner_name!r} has no flux port of that name")
            continue
        port = {p.name: p for p in organs[owners[port_q]].ports}[port_q.split(".", 1)[1]]
        result[port_q] = [(q, *_convert(out.unit, port.unit, f"between flux {q} and port {port_q}"))
                          for q, out in items]
    return result


def _output_order(organs, decl_outputs, q_out, resolved, port_contrib) -> list[str]:
    """Outputs in an order where every algebraic dependency comes first; refuses cycles."""
    deps: dict[str, list[str]] = {}
    for (i, out), q in zip(decl_outputs, q_out):
        o = organs[i]
        inputs_by_name = {inp.name: k for k, inp in enumerate(o.inputs)}
        port_names = {p.name for p in o.ports}
        d: list[str] = []
        for name in out.depends_on:
            if name in inputs_by_name:
                r = resolved[i][inputs_by_name[name]]
                if r.kind == "output":
                    d.append(r.source)
            elif name in port_names:
                d.extend(src for src, _, _ in port_contrib.get(_qualify(o, name), []))
            else:
                raise WiringError(f"output {q!r} depends on {name!r}, which is not an input or port of {o.name!r}")
        deps[q] = d
    cycle = _find_cycle(deps)
    if cycle:
        raise WiringError("algebraic cycle between outputs: " + " -> ".join(cycle)
                          + " (break it with a state, i.e. a lag, in one of these organs)")
    return _topological(deps, q_out)


def _plan(order, organ_of) -> tuple[tuple[int, tuple[str, ...]], ...]:
    """Evaluation plan: consecutive outputs of one organ share one rhs call."""
    plan: list[tuple[int, list[str]]] = []
    for q in order:
        i = organ_of[q]
        if plan and plan[-1][0] == i:
            plan[-1][1].append(q.split(".", 1)[1])
        else:
            plan.append((i, [q.split(".", 1)[1]]))
    return tuple((i, tuple(n)) for i, n in plan)


def _reset_columns(organs, inputs) -> tuple[tuple[int, ...], ...]:
    out = []
    for i, o in enumerate(organs):
        names = [inp.name for inp in o.inputs]
        cols = []
        for name in o.resets:
            if name not in names:
                raise WiringError(f"organ {o.name!r} resets on {name!r}, which is not one of its inputs")
            c = inputs[i][names.index(name)]
            if c.kind == "timeline":
                cols.append(c.index)
        out.append(tuple(cols))
    return tuple(out)


def _slices(organs, group: str) -> tuple[tuple[int, int], ...]:
    res, start = [], 0
    for o in organs:
        n = len(getattr(o, group))
        res.append((start, start + n))
        start += n
    return tuple(res)


def _instantiate(organs) -> tuple[Organ, ...]:
    from .registry import get_organ

    organs = tuple(get_organ(o)() if isinstance(o, str) else o for o in organs)
    if not organs:
        raise WiringError("a composition needs at least one organ")
    _check_unique(organs)
    return organs


def compose(
    organs: Sequence[Organ | str],
    *,
    connections: Mapping[str, str] | None = None,
    signal_units: Mapping[str, str] | None = None,
) -> Model:
    """Build one `Model` from organs.

    Arguments:
        organs: organ instances or registered organ names (see `physiotwin.list_organs`).
        connections: overrides ``{"organ.input": "organ.output" | "timeline.signal"}``
            for inputs whose declared ``source`` should be replaced.
        signal_units: units of the timeline signals available (name without the
            ``timeline.`` prefix -> unit); default: every signal of the installed plugins.

    Raises:
        WiringError: naming the organs and ports involved, for duplicate organs,
            unknown connection targets, sources that name no installed organ or output,
            unit mismatches, a port owned twice or an algebraic cycle.
    """
    from .registry import timeline_signals

    organs = _instantiate(organs)
    connections = dict(connections or {})
    signal_units = {n: s.unit for n, s in timeline_signals().items()} if signal_units is None else dict(signal_units)
    by_name = {o.name: o for o in organs}
    for target in connections:
        organ_name, _, inp = target.partition(".")
        if organ_name not in by_name or inp not in {i.name for i in by_name[organ_name].inputs}:
            raise WiringError(f"connection target {target!r} is not an input of an organ in the composition")

    decl_outputs = [(i, out) for i, o in enumerate(organs) for out in o.outputs]
    q_out = [_qualify(organs[i], out.name) for i, out in decl_outputs]
    owners = _pool_owners(organs)
    resolved, used_signals = _resolve_inputs(organs, connections, signal_units, by_name)
    port_contrib = _port_contributions(organs, decl_outputs, q_out, owners, by_name)
    order = _output_order(organs, decl_outputs, q_out, resolved, port_contrib)
    out_pos = {q: k for k, q in enumerate(order)}

    def position(r: _Resolved) -> int:
        if r.kind == "output":
            return out_pos[r.source]
        return used_signals.index(r.source.split(".", 1)[1]) if r.kind == "timeline" else -1

    inputs = tuple(tuple(Connection(r.kind, r.source, position(r), r.scale, r.offset) for r in row)
                   for row in resolved)
    ports = tuple(tuple(tuple((out_pos[q], sc, off) for q, sc, off in port_contrib.get(_qualify(o, p.name), ()))
                        for p in o.ports) for o in organs)
    return Model(
        organs=organs,
        state_names=tuple(_qualify(o, s.name) for o in organs for s in o.states),
        param_names=tuple(_qualify(o, p.name) for o in organs for p in o.params),
        output_names=tuple(order),
        signal_names=tuple(f"timeline.{s}" for s in used_signals),
        signal_units=tuple(signal_units[s] for s in used_signals),
        _state_slices=_slices(organs, "states"),
        _param_slices=_slices(organs, "params"),
        _inputs=inputs,
        _ports=ports,
        _plan=_plan(order, {q: i for (i, _), q in zip(decl_outputs, q_out)}),
        reset_columns=_reset_columns(organs, inputs),
    )
