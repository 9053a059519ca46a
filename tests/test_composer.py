"""The composer: wiring by name, unit conversion, flux ports, algebraic ordering,
cycles, resets, and organs running alone. Toy organs keep this file fast."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import physiotwin as pt
from physiotwin.composer import WiringError


class Source(pt.Organ):
    name = "source"
    states = (pt.State("A", "g", "amount"),)
    params = (pt.Param("k", "1/min", 0.1, "rate"),)
    outputs = (pt.Output("conc", "g/L", "concentration A / 1 L"),
               pt.Output("leak", "mg/min", "what leaves, pushed into sink.pool", flux_to="sink.pool"))

    def initial_state(self, p, u):
        return {"A": jnp.asarray(2.0)}

    def rhs(self, t, x, p, u):
        return {"A": -p["k"] * x["A"]}, {"conc": x["A"] / 1.0, "leak": 1000 * p["k"] * x["A"]}


class Sink(pt.Organ):
    name = "sink"
    states = (pt.State("B", "mg", "amount"),)
    inputs = (pt.Input("c", "mg/dL", 5.0, "concentration read from the source", source="source.conc"),)
    ports = (pt.FluxPort("pool", "mg/min", "inflow"),)
    outputs = (pt.Output("seen", "mg/dL", "c as seen", depends_on=("c",)),
               pt.Output("inflow", "mg/min", "port total", depends_on=("pool",)))

    def initial_state(self, p, u):
        return {"B": jnp.asarray(0.0)}

    def rhs(self, t, x, p, u):
        return {"B": u["pool"]}, {"seen": u["c"], "inflow": u["pool"]}


def test_units_are_converted_once_and_fluxes_summed():
    model = pt.compose([Source(), Sink()])
    assert model.connections()["sink.c"] == "source.conc"
    y = jnp.array([2.0, 0.0])
    theta = jnp.array([0.1])
    dy, out = model.evaluate(0.0, y, theta, jnp.zeros(0))
    outs = dict(zip(model.output_names, np.asarray(out)))
    assert outs["sink.seen"] == pytest.approx(2.0 * 100.0)  # 2 g/L = 200 mg/dL
    assert outs["sink.inflow"] == pytest.approx(200.0)  # 1000 * 0.1 * 2 mg/min
    assert np.asarray(dy)[1] == pytest.approx(200.0)
    # mass balance: what leaves the source (g/min) arrives in the sink (mg/min)
    assert -np.asarray(dy)[0] * 1000 == pytest.approx(np.asarray(dy)[1])


def test_organ_runs_alone_on_its_defaults():
    """An input whose source organ is installed but not composed takes its default."""
    alone = type("Alone", (Sink,), {"inputs": (pt.Input("c", "mg/dL", 5.0, "glucose, when composed",
                                                         source="glucose.plasma_glucose"),)})
    model = pt.compose([alone()])
    assert model.connections()["sink.c"].startswith("default 5")
    _, out = model.evaluate(0.0, jnp.array([0.0]), jnp.zeros(0), jnp.zeros(0))
    assert dict(zip(model.output_names, np.asarray(out))) == {"sink.seen": 5.0, "sink.inflow": 0.0}


def test_a_source_naming_no_installed_organ_or_output_is_a_wiring_error():
    with pytest.raises(WiringError, match=r"'sink\.c' reads 'source\.conc', but no installed organ is called 'source'"):
        pt.compose([Sink()])  # Source is a toy organ, not installed: a misspelling as far as the composer knows
    typo = type("Typo", (Sink,), {"inputs": (pt.Input("c", "mg/dL", 5.0, "x", source="glucose.plasma_glucos"),)})
    with pytest.raises(WiringError, match=r"organ 'glucose' has no output 'plasma_glucos'"):
        pt.compose([typo()])
    assert pt.compose([Sink(), Source()]).connections()["sink.c"] == "source.conc"  # composed: fine


def test_dependent_outputs_are_ordered_after_their_sources():
    model = pt.compose([Sink(), Source()])  # declared in the "wrong" order
    assert model.output_names.index("source.conc") < model.output_names.index("sink.seen")
    assert model.output_names.index("source.leak") < model.output_names.index("sink.inflow")


def _organ(name, *, inputs=(), outputs=(), unit="mg/dL"):
    """A toy organ class with the given inputs (name, source) and outputs (name, depends_on)."""
    attrs = {
        "name": name,
        "states": (pt.State("x", "1", "x"),),
        "inputs": tuple(pt.Input(i, unit, 0.0, i, source=src) for i, src in inputs),
        "outputs": tuple(pt.Output(o, "mg/dL", o, depends_on=tuple(d)) for o, d in outputs),
        "initial_state": lambda self, p, u: {"x": jnp.asarray(0.0)},
        "rhs": lambda self, t, x, p, u: ({"x": 0.0 * x["x"]},
                                         {o: sum((u[i] for i in d), 1.0 + x["x"]) for o, d in outputs}),
    }
    return type(name.capitalize(), (pt.Organ,), attrs)()


def test_algebraic_cycle_is_refused_with_the_cycle_spelled_out():
    a = _organ("a", inputs=[("in", "b.out")], outputs=[("out", ["in"])])
    b = _organ("b", inputs=[("in", "a.out")], outputs=[("out", ["in"])])
    with pytest.raises(WiringError, match=r"algebraic cycle.*a\.out -> b\.out -> a\.out|b\.out -> a\.out -> b\.out"):
        pt.compose([a, b])


def test_state_dependent_outputs_break_cycles():
    a = _organ("a", inputs=[("in", "b.out")], outputs=[("out", [])])
    b = _organ("b", inputs=[("in", "a.out")], outputs=[("out", ["in"])])
    model = pt.compose([a, b])
    _, out = model.evaluate(0.0, jnp.zeros(2), jnp.zeros(0), jnp.zeros(0))
    outs = dict(zip(model.output_names, np.asarray(out)))
    assert outs == {"a.out": 1.0, "b.out": 2.0}


def test_unit_mismatch_names_both_ports():
    a = _organ("a", outputs=[("out", [])])
    b = _organ("b", inputs=[("in", "a.out")], unit="mL")
    with pytest.raises(WiringError, match=r"a\.out.*b\.in.*cannot convert 'mg/dL'.*'mL'"):
        pt.compose([a, b])


def test_missing_output_and_unknown_names_are_refused():
    a = _organ("a", outputs=[("out", [])])
    b = _organ("b", inputs=[("in", "a.nope")])
    with pytest.raises(WiringError, match=r"'b\.in' reads 'a\.nope'.*its outputs: out"):
        pt.compose([a, b])
    with pytest.raises(WiringError, match="appears twice"):
        pt.compose([a, _organ("a")])
    with pytest.raises(WiringError, match="unknown organ 'liver'; installed organs: .*glucose"):
        pt.compose(["liver"])
    with pytest.raises(WiringError, match="not an input"):
        pt.compose([a], connections={"a.zzz": "b.out"})
    with pytest.raises(WiringError, match="no flux port"):
        bad = type("Bad", (Source,), {"outputs": (Source.outputs[0], pt.Output("leak", "mg/min", "x", flux_to="sink.nothere"))})
        pt.compose([bad(), Sink()])


def test_two_owners_of_one_pool_are_refused():
    owner_a = type("A", (Sink,), {"name": "a", "ports": (pt.FluxPort("pool", "mg/min", "x", pool="plasma_glucose"),)})
    owner_b = type("B", (Sink,), {"name": "b", "ports": (pt.FluxPort("glc", "mg/min", "x", pool="plasma_glucose"),)})
    with pytest.raises(WiringError, match=r"pool 'plasma_glucose' is owned by two organs: port 'a\.pool' and port 'b\.glc'"):
        pt.compose([owner_a(), owner_b()])


class Owner(pt.Organ):
    """Has its own loss term, which a partner's flux may replace."""

    name = "owner"
    states = (pt.State("Q", "mg", "amount"),)
    ports = (pt.FluxPort("loss", "mg/min", "what leaves", builtin=True),)

    def initial_state(self, p, u):
        return {"Q": jnp.asarray(10.0)}

    def rhs(self, t, x, p, u):
        loss = 0.5 * x["Q"] if u["loss"] is None else u["loss"]
        return {"Q": -loss}, {}


class Remover(pt.Organ):
    name = "remover"
    states = (pt.State("R", "mg", "removed"),)
    outputs = (pt.Output("removal", "mg/min", "removal", flux_to="owner.loss"),)

    def initial_state(self, p, u):
        return {"R": jnp.asarray(0.0)}

    def rhs(self, t, x, p, u):
        return {"R": jnp.asarray(2.0)}, {"removal": jnp.asarray(2.0)}


def test_a_partner_flux_replaces_the_owners_builtin_term():
    alone = pt.compose([Owner()])
    assert float(alone.evaluate(0.0, jnp.array([10.0]), jnp.zeros(0), jnp.zeros(0))[0][0]) == -5.0
    both = pt.compose([Owner(), Remover()])
    dy, _ = both.evaluate(0.0, jnp.array([10.0, 0.0]), jnp.zeros(0), jnp.zeros(0))
    assert list(np.asarray(dy)) == [-2.0, 2.0]  # the built-in -5 is gone, not added to


def test_every_declared_unit_is_checked_at_build_time():
    bad = type("Bad", (Source,), {"states": (pt.State("A", "glorps", "amount"),)})
    with pytest.raises(WiringError, match=r"organ 'source', state 'A': unknown unit 'glorps'"):
        pt.compose([bad()])


def test_every_hook_is_documented_and_implemented_by_a_builtin_plugin():
    from physiotwin import plugins
    from physiotwin.registry import plugin_manager

    pm = plugin_manager()
    for name in ("register_organs", "register_timeline_kinds"):
        assert getattr(plugins, name).__doc__.strip()
        impls = getattr(pm.hook, name).get_hookimpls()
        assert any(pm.get_name(i.plugin) in ("glucose", "pancreas", "timeline_kinds") for i in impls)


def test_model_is_hashable_and_built_once():
    m1 = pt.compose([Source(), Sink()])
    m2 = pt.compose([Source(), Sink()])
    assert hash(m1) == hash(m2) and m1 == m2


# ------------------------------------------------------------------ properties
@st.composite
def dags(draw):
    """A random chain-free DAG of toy organs: organ i may read outputs of organs < i."""
    n = draw(st.integers(2, 6))
    specs = []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=min(i, 3))) if i else []
        specs.append(parents)
    order = draw(st.permutations(range(n)))
    return specs, order


@settings(max_examples=40, deadline=None)
@given(dags())
def test_any_dag_composes_and_evaluates_in_dependency_order(spec):
    parents, order = spec
    organs = {i: _organ(f"o{i}", inputs=[(f"in{j}", f"o{j}.out") for j in ps], outputs=[("out", [f"in{j}" for j in ps])])
              for i, ps in enumerate(parents)}
    model = pt.compose([organs[i] for i in order])
    pos = {n: k for k, n in enumerate(model.output_names)}
    for i, ps in enumerate(parents):
        for j in ps:
            assert pos[f"o{j}.out"] < pos[f"o{i}.out"]
    # value of each output = 1 + sum of parents' values: check against a direct recursion
    _, out = model.evaluate(0.0, jnp.zeros(len(parents)), jnp.zeros(0), jnp.zeros(0))
    got = dict(zip(model.output_names, np.asarray(out)))
    want: dict[int, float] = {}
    for i, ps in enumerate(parents):
        want[i] = 1.0 + sum(want[j] for j in ps)
    assert all(got[f"o{i}.out"] == pytest.approx(v) for i, v in want.items())


@settings(max_examples=40, deadline=None)
@given(dags(), st.data())
def test_closing_any_cycle_is_refused(spec, data):
    parents, order = spec
    n = len(parents)
    # add an edge from a descendant back to an ancestor to close a cycle
    edges = [(i, j) for i, ps in enumerate(parents) for j in ps]
    if not edges:
        parents[1] = [0]
        edges = [(1, 0)]
    child, parent = data.draw(st.sampled_from(edges))
    parents[parent] = parents[parent] + [child]
    organs = [_organ(f"o{i}", inputs=[(f"in{j}", f"o{j}.out") for j in ps], outputs=[("out", [f"in{j}" for j in ps])])
              for i, ps in enumerate(parents)]
    with pytest.raises(WiringError) as err:
        pt.compose([organs[i] for i in order if i < n])
    assert f"o{child}.out" in str(err.value) and f"o{parent}.out" in str(err.value)
