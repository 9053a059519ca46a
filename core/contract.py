"""The organ contract: what an organ plugin declares and provides.

An organ is a static declaration (its states, parameters, inputs, outputs and
flux ports, each with a unit) plus two pure JAX functions, `Organ.initial_state`
and `Organ.rhs`. The composer (`physiotwin.compose`) reads the declarations once,
checks and converts units, wires organs together and flattens everything into one
vector field; the functions are then traced by JAX and never see Python floats,
files or pint.

Minimal example (a one-compartment drug, cleared at rate ``k``):

```python
import physiotwin as pt

class Drug(pt.Organ):
    name = "drug"
    description = "one-compartment drug"
    reference = "textbook"
    states = (pt.State("A", "mg", "amount in the body"),)
    params = (pt.Param("k", "1/min", 0.01, "elimination rate", source="assumed"),)
    inputs = (pt.Input("dose_rate", "mg/min", 0.0, "infusion", source="timeline.drug_rate"),)
    outputs = (pt.Output("amount", "mg", "amount in the body"),)

    def initial_state(self, p, u):
        return {"A": 0.0 * p["k"]}

    def rhs(self, t, x, p, u):
        dA = u["dose_rate"] - p["k"] * x["A"]
        return {"A": dA}, {"amount": x["A"]}
```

Conventions:
- ``x``, ``p`` and ``u`` are mappings from declared names to JAX scalars (the
  composer vmaps over patients, so organ code is written for one patient).
- ``u`` holds every declared input (already converted to the declared unit) and
  every flux port (the sum of all contributions, in the port's unit; ``0`` when
  nothing is connected).
- `Organ.rhs` returns ``(dx, y)``: one derivative per state (in state unit per
  minute) and one value per declared output. The composer may call `rhs` more
  than once per step to resolve algebraic outputs; JAX removes the duplicates.
- Time is in minutes everywhere.
- Discrete events: an organ that must update a state at an instant (e.g. the
  gastric-emptying bookkeeping of the UVA/Padova model samples the stomach content
  when a meal starts) lists timeline-fed inputs in ``resets``; whenever one of them
  changes value, the solver stops there and `Organ.reset` maps the state across.
- Steady state: when `Organ.initial_state` reads start values from parameters (basal
  masses, a basal infusion), those parameters are tied to the others. The organ lists them
  in ``derived`` and computes them in `Organ.derive` (NumPy, vectorised over patients), so
  that a virtual population (`physiotwin.population.sample_population`) can draw the free
  parameters and still start every virtual patient at rest.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Mapping

import equinox as eqx
import numpy as np
from jaxtyping import Array, ArrayLike

__all__ = ["State", "Param", "Input", "Output", "FluxPort", "Residual", "Organ"]


@dataclass(frozen=True)
class State:
    """A state variable of an organ.

    Arguments:
        name: identifier, unique in the organ (the paper's symbol is fine: ``Gp``).
        unit: pint unit string (e.g. ``"mg/kg"``).
        description: one line for plots and ``long_name``.
        nonnegative: the state is physically >= 0.
        scale: typical magnitude, in ``unit``; the solver's absolute tolerance for
            this state is ``atol * scale`` (e.g. 1000 for a state in mg that holds grams).
    """

    name: str
    unit: str
    description: str
    nonnegative: bool = True
    scale: float = 1.0


@dataclass(frozen=True)
class Param:
    """A parameter of an organ.

    Arguments:
        name: identifier; also the column name in patient tables.
        unit: pint unit string.
        value: nominal value (used when a patient table has no column for it).
        description: one line.
        lower, upper: admissible bounds (used to validate tables and in fitting).
        transform: how calibration parameterises it: ``"log"``, ``"logit"`` or ``"identity"``.
        scope: ``"patient"`` (varies between patients), ``"population"`` or ``"fixed"``.
        source: where the value comes from (paper, table).
        prior_sd: spread of the parameter between patients, as a standard deviation in
            the transformed space (0.1 with ``"log"``: about +-10 %); calibration uses it
            for its prior when the bundled patients do not vary the parameter.
    """

    name: str
    unit: str
    value: float
    description: str
    lower: float = -math.inf
    upper: float = math.inf
    transform: Literal["log", "logit", "identity"] = "identity"
    scope: Literal["patient", "population", "fixed"] = "patient"
    source: str = ""
    prior_sd: float | None = None


@dataclass(frozen=True)
class Input:
    """A signal an organ reads.

    Arguments:
        name: identifier used in ``u[name]``.
        unit: the unit the organ wants; the composer converts the source to it.
        default: value used when no source is present (so every organ runs alone).
        description: one line.
        source: the qualified signal it is fed from: ``"organ.output"`` for another
            organ's output, or ``"timeline.signal"`` for a signal compiled from the
            timeline (see `physiotwin.timeline_signals`). ``None``: default only,
            unless the composition's ``connections`` says otherwise.
    """

    name: str
    unit: str
    default: float
    description: str
    source: str | None = None


@dataclass(frozen=True)
class Output:
    """A signal an organ exposes to other organs and to the output Dataset.

    Arguments:
        name: identifier; appears as ``organ.name`` in results.
        unit: pint unit string.
        description: one line.
        depends_on: names of this organ's inputs (or flux ports) that the output
            depends on algebraically, i.e. within the same instant. Outputs that
            depend only on states leave it empty. The composer orders outputs by
            these dependencies and refuses algebraic cycles.
        flux_to: ``"organ.port"``: this output is also a flux pushed into that
            port of the organ that owns the pool.
    """

    name: str
    unit: str
    description: str
    depends_on: tuple[str, ...] = ()
    flux_to: str | None = None


@dataclass(frozen=True)
class FluxPort:
    """A pool this organ owns that other organs may push amounts into.

    The composer sums every output declared with ``flux_to="<this organ>.<name>"``
    (after unit conversion to ``unit``) and passes the sum as ``u[name]``. Exactly
    one organ owns a pool.

    ``builtin=True`` declares that the owner has its own term for this flux (for
    example the glucose organ's renal excretion): when no organ in the composition
    pushes into the port, ``u[name]`` is ``None`` and the owner uses its built-in
    term; when a partner does (the renal organ), the partner's flux replaces it, so
    the quantity is never counted twice.

    ``pool`` names the physical pool (``"plasma_glucose"``, ``"blood_volume"``) so the
    composer can refuse two organs that both claim to own it.
    """

    name: str
    unit: str
    description: str
    builtin: bool = False
    pool: str | None = None


@dataclass(frozen=True)
class Residual:
    """A residual slot: where a neural network may act on this organ.

    The hybrid model (`physiotwin.calibration.Hybrid`) adds ``scale * net(features)``
    to the derivative of ``state``, where ``net`` is a small MLP whose last layer
    starts at zero, so an untrained hybrid equals the mechanism exactly.

    A slot with `rates` *modulates* rates instead of adding a flux: its network's output
    ``m = scale * net(features)`` is a relative change (unit 1), and for every
    ``(state, output, sign)`` in `rates` the hybrid adds ``sign * m * output`` to the
    derivative of ``state``. The output must be in the state's unit per minute (checked
    when the hybrid is built). This is how an organ lets a network learn, say, a
    time-of-day-dependent sensitivity: the rates it scales keep their mechanistic shape.

    Arguments:
        name: identifier, unique in the organ (``"glucose_flux"``).
        state: the state whose derivative receives the term.
        scale: typical magnitude of the term, in the state's unit per minute; the
            network's output (order 1) is multiplied by it.
        features: the organ's own states or outputs the network sees. The hybrid
            normalises each by its mean and spread over the mechanistic trajectory
            of the calibration record, and adds the time of day (two harmonics).
        description: what the term stands for (e.g. "unmodelled glucose appearance
            and uptake").
        rates: for a modulating slot, the ``(state, output, sign)`` terms it scales
            (`state` is then the slot's main state, for reports).
    """

    name: str
    state: str
    scale: float
    features: tuple[str, ...]
    description: str = ""
    rates: tuple[tuple[str, str, float], ...] = ()


class Organ(eqx.Module):
    """Base class of every organ plugin. See the module docstring for the contract.

    Subclasses set the class attributes below and implement `initial_state` and
    `rhs`. Instance fields (if any) are static options such as a numerical mode;
    organs are built once and are hashable.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    states: ClassVar[tuple[State, ...]] = ()
    params: ClassVar[tuple[Param, ...]] = ()
    inputs: ClassVar[tuple[Input, ...]] = ()
    outputs: ClassVar[tuple[Output, ...]] = ()
    ports: ClassVar[tuple[FluxPort, ...]] = ()
    resets: ClassVar[tuple[str, ...]] = ()
    #: residual slots: where a hybrid model may add a neural-network term (see `Residual`)
    residuals: ClassVar[tuple[Residual, ...]] = ()
    #: parameters a calibration fits by default (the identifiable ones, given the observations
    #: the organ is usually fitted to); ``None`` means every parameter of scope ``"patient"``
    calibrated: ClassVar[tuple[str, ...] | None] = None
    #: the organ mixes fast reflexes with slow pools: compositions with it are solved with
    #: an implicit solver and start from the composed steady state (see `physiotwin.Simulator`)
    stiff: ClassVar[bool] = False
    #: largest step (min) an explicit solver may take with this organ: about its fastest
    #: time constant. Fast modes at rest do not limit the error control, so without a
    #: cap the step can outgrow the stability limit, which leaves the trajectory right
    #: but makes its derivative diverge.
    max_step: ClassVar[float] = math.inf
    #: a calibration's multiple-shooting window (min) when this organ is composed: about the
    #: time its states take to forget a disturbance the record does not explain. The longest
    #: window of the composition applies (slow states need long windows to be seen by sparse
    #: data, fast ones short windows to absorb disturbances); ``--window`` overrides it.
    shooting_window: ClassVar[float] = 180.0
    #: parameters the organ computes from its others (`derive`): those its steady state at the
    #: defaults of its inputs fixes (the start values of its states, a basal production...) and
    #: those a relation of the model ties to others. A virtual population samples the others and
    #: lets the organ derive these (`physiotwin.population.sample_population`).
    derived: ClassVar[tuple[str, ...]] = ()

    def reset(self, t: Array, x: Mapping[str, Array], p: Mapping[str, Array], u: Mapping[str, Array]
              ) -> Mapping[str, ArrayLike]:
        """State right after a change of one of the ``resets`` inputs at time ``t``
        (``u`` holds the inputs after the change). Default: unchanged."""
        return x

    def derive(self, p: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The parameters named in ``derived``, from the others, so that `initial_state` is at
        rest at the defaults of the inputs. ``p`` maps every parameter of the organ to a float64
        NumPy array (one entry per virtual patient; the values of the derived ones are stale);
        returns one array per name in ``derived``. Plain NumPy, vectorised over patients.
        Default: nothing is derived."""
        return {}

    @abc.abstractmethod
    def initial_state(
        self, p: Mapping[str, Array], u: Mapping[str, Array]
    ) -> Mapping[str, ArrayLike]:
        """State at the start of a simulation (the steady state at basal inputs
        where the model defines one), one entry per declared state."""

    @abc.abstractmethod
    def rhs(
        self, t: Array, x: Mapping[str, Array], p: Mapping[str, Array], u: Mapping[str, Array]
    ) -> tuple[Mapping[str, ArrayLike], Mapping[str, ArrayLike]]:
        """Return ``(dx/dt, outputs)`` at time ``t`` (minutes)."""
