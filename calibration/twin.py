"""The calibrated patient twin: fit, save, load, forecast.

```python
import physiotwin as pt
twin = pt.calibrate("record.csv", ["glucose"], hybrid=True, seed=0)
twin.save("twin/")
twin = pt.Twin.load("twin/")            # bit-identical
fc = twin.forecast("next_days.csv", horizons=[30, 60])   # xarray Dataset
```

A twin directory holds

- ``twin.json``: organs, observation models and input corrections, fitted parameter
  space and values (also in readable units), input-correction factors, settings, filter
  settings, fit history and diagnostics (with the identifiability table), the model's
  state/parameter names (checked on load), and SHA-256 checksums of
- ``arrays.npz``: the float64 arrays of the fit (exact), and
- ``networks.eqx``: the residual networks (equinox serialisation), for a hybrid;
- ``record.csv``: the record it was fitted on (evaluation fits its baselines on it).

Three variants of the same twin can forecast, for honest comparisons:
``"population"`` (population parameters, no fitting), ``"mechanistic"`` (the
calibrated mechanism without residuals) and ``"twin"`` (the final fit: the hybrid
when there is one).
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..composer import Model, compose
from ..errors import CalibrationError, ObservationError
from ..observation import ObservationModel
from ..timeline import Timeline, read_timeline
from .data import check_kinds, observed_kinds, prepare_record, readings_on_grid, record_minutes, split_record, timeline_text
from .filter import Filter, tune_filter
from .fit import FitResult, FitSettings, fit_record, rest_state
from .forecast import run_forecast
from .hybrid import Hybrid, TwinField, slots_of
from .problem import rest_signals, substeps
from .space import ParameterSpace, error_space, population_space

__all__ = ["Twin", "calibrate", "VARIANTS", "observation_models_for"]

VARIANTS = ("population", "mechanistic", "twin")
# filter process noise tried at calibration: a fraction of each state's typical size per minute
Q_GRID = (0.0003, 0.001, 0.003, 0.01)
Q_FORECAST = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)  # process noise, chosen by forecast error
TUNE_DAYS = 2.0
TUNE_HORIZON = 30


def read_record(record, source=None) -> tuple[Timeline, str]:
    """A record given as a `Timeline` or a path, and the name messages use for it."""
    if isinstance(record, Timeline):
        return _checked(record), source or record.source
    path = Path(record)
    return _checked(read_timeline(path)), path.name


def _checked(tl: Timeline) -> Timeline:
    """The record after the plausibility checks (`physiotwin.plausibility`); notes are warnings."""
    import warnings

    from ..plausibility import RecordWarning, check_record

    tl, notes = check_record(tl)
    for note in notes:
        warnings.warn(note, RecordWarning, stacklevel=3)
    return tl


def _providers(output: str) -> list[str]:
    from ..registry import organ_classes

    return [name for name, cls in organ_classes().items() if output in {o.name for o in cls.outputs}]


def observation_models_for(model: Model, kinds: Sequence[str], source: str, options: dict | None = None
                           ) -> list[ObservationModel]:
    """One observation model per kind (the registered one), checked against ``model``."""
    from ..registry import observation_models

    by_kind = {cls.kind: cls for cls in observation_models().values()}
    out = []
    for kind in kinds:
        if kind not in by_kind:
            raise ObservationError(f"{source}: no installed observation model explains {kind!r} readings; pass "
                                   f"--ignore-kind {kind} to leave them out")
        om = by_kind[kind].create(**(options or {}))
        try:
            om.output_name(model)
        except ObservationError as err:
            organs = ", ".join(_providers(om.output)) or "no installed organ"
            raise ObservationError(f"{source}: {err} (provided by: {organs}), or pass --ignore-kind {kind}") from None
        out.append(om)
    return out


class Twin:
    """A patient twin: a composition, fitted values, and what is needed to forecast.

    Arguments:
        organs: the organs of the composition. observations: ``[(name, options)]`` of the
        observation models it was fitted with. corrections: names of the input corrections
        fitted. space: the fitted parameter space. result: the fit. settings: calibration
        options. filters: tuned filter settings per variant. scale: typical state sizes.
    """

    def __init__(self, organs: Sequence[str], observations: Sequence[tuple[str, dict]], space: ParameterSpace,
                 result: FitResult, settings: FitSettings, filters: dict[str, dict], scale: np.ndarray,
                 record_source: str, record_text: str | None = None, model: Model | None = None):
        from ..registry import observation_models

        self.organs = list(organs)
        self.model = compose(self.organs) if model is None else model
        installed = observation_models()
        missing = [n for n, _ in observations if n not in installed]
        if missing:
            raise ObservationError(f"the twin uses observation models {missing}, which no installed plugin provides")
        self.observation_specs = [(n, dict(o)) for n, o in observations]
        self.observations = [installed[n].create(**o) for n, o in observations]
        self.space = space
        self.errors_space = error_space([f"{om.kind}.{p.name}" for om in self.observations for p in om.params],
                                        [p for om in self.observations for p in om.params])
        self.result = result
        self.settings = settings
        self.filters = {k: dict(v) for k, v in filters.items()}
        self.scale = np.asarray(scale, dtype=float)
        self.record_source = record_source
        self.record_text = record_text

    # ------------------------------------------------------------ parameters
    @property
    def hybrid(self) -> Hybrid | None:
        return self.result.hybrid

    @property
    def kinds(self) -> list[str]:
        return [om.kind for om in self.observations]

    def theta(self, variant: str = "twin") -> np.ndarray:
        """Full parameter vector (order ``model.param_names``) of a variant."""
        if variant == "population":
            return np.asarray(self.space.base)
        z = self.result.z if variant == "twin" else self.result.z_mech
        return np.asarray(self.space.theta(jnp.asarray(z)))

    def errors(self, variant: str = "twin") -> list[dict[str, float]]:
        """Each observation model's fitted error parameters (the population variant uses the mechanism's)."""
        ze = self.result.errors if variant == "twin" else self.result.errors_mech
        values = np.asarray(self.errors_space.values(jnp.asarray(ze)))
        out, k = [], 0
        for om in self.observations:
            out.append({p.name: float(values[k + i]) for i, p in enumerate(om.params)})
            k += len(om.params)
        return out

    def parameters(self, variant: str = "twin") -> dict[str, float]:
        """``{"organ.param": value}`` of the fitted parameters, in their declared units."""
        th = self.theta(variant)
        return {n: float(th[i]) for n, i in zip(self.space.names, self.space.index)}

    # ------------------------------------------------------------ forecasting
    def filter(self, variant: str, day0: float, settings: dict | None = None) -> Filter:
        """The state filter of a variant (``settings``: ``q`` and ``kind.param`` error values;
        default: the tuned ones)."""
        s = self.filters.get(variant, {}) if settings is None else settings
        errors = tuple({n: jnp.asarray(s.get(f"{om.kind}.{n}", v)) for n, v in e.items()}
                       for om, e in zip(self.observations, self.errors(variant)))
        field = TwinField(self.model, jnp.asarray(self.theta(variant)), self.hybrid if variant == "twin" else None,
                          jnp.asarray(float(day0)))
        nonneg = np.array([self.model.declaration(n).nonnegative for n in self.model.state_names])
        cols = tuple(self.model.output_names.index(om.output_name(self.model)) for om in self.observations)
        return Filter(field, substeps(self.model), tuple(self.observations), cols, errors, jnp.asarray(self.scale),
                      jnp.asarray(nonneg))

    def _extras(self) -> list[tuple[str, int, str]]:
        """Extra noise-free variables the observation models ask ``forecast`` to write."""
        out, seen = [], set()
        for om in self.observations:
            for var, output in om.forecast_outputs.items():
                found = [i for i, n in enumerate(self.model.output_names) if n.split(".", 1)[1] == output]
                if len(found) == 1 and var not in seen and var not in self.kinds:
                    seen.add(var)
                    out.append((var, found[0], self.model.declaration(self.model.output_names[found[0]]).unit))
        return out

    def forecast_arrays(self, tl: Timeline, horizon: int, every: int = 5, variant: str = "twin",
                        settings: dict | None = None, ignore: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Forecasts of every kind the twin observes from every ``every`` minutes of ``tl``
        (see `physiotwin.calibration.forecast.run_forecast`)."""
        from ..simulate import require_x64

        require_x64()  # float32 forecasts would be silently wrong, as simulations would
        if variant not in VARIANTS:
            raise CalibrationError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        check_kinds(tl, self.kinds, tl.source, ignore)
        rec = prepare_record(self.model, tl, self.observations, (), tl.source, require_readings=False)
        flt = self.filter(variant, rec.day0, settings)
        y0 = rest_state(self.model, self.theta(variant), rec.inputs.values[0], rest_signals(self.model))
        q = (self.filters.get(variant, {}) if settings is None else settings).get("q", Q_GRID[1])
        return run_forecast(flt, tl, rec.inputs, rec.obs, y0, q, int(horizon), int(every),
                            tuple(col for _, col, _ in self._extras()))

    def error_spread(self, horizon: int, every: int = 5, variant: str = "twin") -> np.ndarray:
        """``sd[horizon, kind]``: the SD of the variant's forecast errors 1..horizon minutes
        ahead, on the last `SPREAD_DAYS` of the training record (known at calibration)."""
        from .data import record_minutes
        from .forecast import error_sd, readings_ahead, spread_origins, spread_part

        tl = self.training_timeline()
        if tl is None:
            raise CalibrationError("the twin has no training record saved; it cannot give forecast bands")
        part = spread_part(tl)
        res = self.forecast_arrays(part, horizon, every, variant)
        o, minutes = res["origin"], record_minutes(part)
        keep = spread_origins(o, minutes)
        out = []
        for k, om in enumerate(self.observations):
            target = readings_ahead(readings_on_grid(part, om.kind, minutes + horizon), o, horizon)
            out.append(error_sd(res["reading"][keep, :, k], target[keep]))
        return np.stack(out, axis=-1)

    def forecast(self, record, horizons: Sequence[int] = (30, 60), every: int = 5, variant: str = "twin",
                 ignore: Sequence[str] = (), bands: bool = False) -> xr.Dataset:
        """Forecast every observed kind at ``horizons`` (min) from every ``every`` minutes of
        ``record`` (a path or `Timeline`): one variable per kind, named as the kind, in its
        unit; see `physiotwin.calibration.forecast`. ``bands``: also ``{kind}_lower`` and
        ``{kind}_upper``, a 90 % predictive band (Gaussian, with the SD of the variant's
        forecast errors at each horizon on the training record, `error_spread`)."""
        tl, source = read_record(record)
        horizons = [int(h) for h in horizons]
        if not horizons or min(horizons) < 1:
            raise CalibrationError("horizons must be whole minutes >= 1")
        if int(every) < 1:
            raise CalibrationError("--every must be a whole number of minutes >= 1")
        res = self.forecast_arrays(tl, max(horizons), every, variant, ignore=ignore)
        h = np.asarray(horizons) - 1
        data = {om.kind: (("origin", "horizon"), res["reading"][:, h, k],
                          {"units": om.unit, "long_name": f"predicted {om.kind} reading", "output": om.output})
                for k, om in enumerate(self.observations)}
        if bands:
            from .forecast import Z90

            sd = self.error_spread(max(horizons), every, variant)[h]
            for k, om in enumerate(self.observations):
                for name, sign in (("lower", -1.0), ("upper", 1.0)):
                    band = res["reading"][:, h, k] + sign * Z90 * sd[None, :, k]
                    data[f"{om.kind}_{name}"] = (("origin", "horizon"), band, {
                        "units": om.unit,
                        "long_name": f"{name} end of the 90 % predictive band of {om.kind} (forecast errors on the "
                                     "training record)"})
        data.update(self._observed_ahead(tl, res["origin"], np.asarray(horizons, dtype=int), ignore))
        for j, (var, col, unit) in enumerate(self._extras()):
            data[var] = (("origin", "horizon"), res["extra"][:, h, j],
                         {"units": unit, "long_name": f"predicted {self.model.output_names[col]} (noise-free)"})
        ds = xr.Dataset(
            data,
            coords={"origin": ("origin", res["origin"].astype(float), {"units": "min", "long_name":
                                                                        "forecast origin since record start"}),
                    "horizon": ("horizon", np.asarray(horizons, dtype=float), {"units": "min"})},
            attrs={"record": source, "variant": variant, "organs": ",".join(self.organs),
                   "observation_models": ",".join(n for n, _ in self.observation_specs),
                   **{f"filter_{k}": v for k, v in self.filters.get(variant, {}).items()},
                   "note": "each forecast uses readings and logged inputs up to its origin only"},
        )
        if tl.start is not None:
            ds = ds.assign_coords(origin_time=("origin", [np.datetime64(tl.start + timedelta(minutes=float(o)))
                                                          for o in res["origin"]]))
        if not np.all(np.isfinite(res["reading"])):
            ds.attrs["warning"] = "some forecasts are not finite (solver failure)"
        return ds

    def _observed_ahead(self, tl: Timeline, origins: np.ndarray, horizons: np.ndarray, ignore) -> dict:
        """``KIND_observed[origin, horizon]``: the reading recorded at origin + horizon (what the
        forecast is scored against; NaN where none was read)."""
        minutes = record_minutes(tl)
        out = {}
        for om in self.observations:
            if om.kind in ignore:
                continue
            grid = readings_on_grid(tl, om.kind, minutes)
            at = origins[:, None].astype(int) + horizons[None, :] - 1
            seen = np.where(at < minutes, grid[np.clip(at, 0, max(minutes - 1, 0))], np.nan)
            out[f"{om.kind}_observed"] = (("origin", "horizon"), seen, {
                "units": om.unit, "long_name": f"{om.kind} reading recorded at origin + horizon (NaN: none)"})
        return out

    # ------------------------------------------------------------ what if
    def whatif(self, timeline, samples: int = 0, *, variant: str = "twin", seed: int = 0, every: int = 5,
               inflation: float = 1.0, hours: float | None = None, controller: str | None = None) -> xr.Dataset:
        """Replay the fitted record under a changed ``timeline`` (path or `Timeline`): the
        states and outputs of the twin, each observed kind under the record and the new
        timeline with its metrics side by side, and with ``samples`` > 0, draws and
        quantiles from the twin's posterior (see `physiotwin.calibration.whatif`).
        ``hours``: length of the replay (default: the longer of the record and ``timeline``).
        ``controller``: run ``timeline`` under this closed-loop controller (`physiotwin.control`)."""
        from ..simulate import require_x64
        from .whatif import whatif_arrays, whatif_dataset

        require_x64()
        if variant not in VARIANTS:
            raise CalibrationError(f"variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        if int(samples) < 0 or int(every) < 1 or (hours is not None and not hours > 0):
            raise CalibrationError("samples must be >= 0, every >= 1 minute and hours > 0")
        tl, source = read_record(timeline)
        minutes = None if hours is None else int(math.ceil(float(hours) * 60.0))
        res = whatif_arrays(self, tl, variant, int(samples), int(seed), int(every), float(inflation), minutes,
                            controller)
        ds = whatif_dataset(self, res, source, variant, seed, inflation)
        if controller is not None:
            ds.attrs["controller"] = controller
        return ds

    # ------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        """Write the twin to ``directory`` (created; an existing twin there is replaced atomically)."""
        from .store import write_twin

        return write_twin(self, directory)

    @classmethod
    def load(cls, directory) -> "Twin":
        """Read a twin directory (checksums and the installed organs are checked; `TwinError`)."""
        from ..simulate import require_x64
        from .store import check_unedited, read_twin

        require_x64()  # the parameters and networks are float64
        twin = cls(**read_twin(directory))
        check_unedited(twin, directory)
        return twin

    def training_timeline(self) -> Timeline | None:
        """The record the twin was fitted on (saved with it), or None. Parsed once (a
        `Timeline` is immutable)."""
        if self.record_text is None:
            return None
        cached = self.__dict__.get("_training")
        if cached is not None and cached[0] is self.record_text:
            return cached[1]
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = (Path(d) / (Path(self.record_source).name or "record.csv")).with_suffix(".csv")
            path.write_text(self.record_text)
            tl = read_timeline(path)
        self._training = (self.record_text, tl)
        return tl

    def __repr__(self):
        kind = "hybrid" if self.hybrid is not None else "mechanistic"
        score = self.result.diagnostics.get("validation_score", math.nan)
        return (f"Twin({kind}, organs={self.organs}, observations={self.kinds}, record={self.record_source!r}, "
                f"held-out score={score:.3g})")


# ---------------------------------------------------------------- calibration
def _forecast_error(twin: Twin, tl: Timeline, variant: str, settings: dict, horizon: int, warmup: int) -> float:
    """Sum over kinds of the mean squared ``horizon``-minute forecast error, in units of each
    kind's typical reading error."""
    res = twin.forecast_arrays(tl, horizon, 5, variant, settings)
    o = res["origin"]
    minutes = int(np.ceil(float(np.max(tl.time)) + 1e-9))
    total = 0.0
    for k, om in enumerate(twin.observations):
        target = readings_on_grid(tl, om.kind, minutes + horizon)[o + horizon - 1]
        pred = res["reading"][:, horizon - 1, k]
        m = (o >= warmup) & np.isfinite(target) & np.isfinite(pred)
        if m.any():
            total += float(np.mean((pred[m] - target[m]) ** 2)) / om.typical_error ** 2
        elif not np.isfinite(pred[o >= warmup]).all():
            return math.inf
    return total


def tune_variant(twin: Twin, tl: Timeline, variant: str, days: float = TUNE_DAYS, horizon: int = TUNE_HORIZON
                 ) -> dict:
    """Filter settings for a variant, from the last ``days`` of the fitted record (known at
    calibration): error parameters by the predictive likelihood of the readings
    (`physiotwin.calibration.filter.tune_filter`), then the process noise ``q`` by the error
    of the ``horizon``-minute forecasts. The likelihood alone trusts a model that fits the
    past well but drifts over the next hour (on 2 of 10 simglucose adults it chose q = 3e-4
    where 0.1 forecast 30 % better)."""
    end = float(np.max(tl.time))
    part = split_record(tl, max(0.0, end - days * 1440.0))[1] if end > days * 1440.0 else tl
    rec = prepare_record(twin.model, part, twin.observations, (), tl.source, require_readings=False)
    flt = twin.filter(variant, rec.day0, {})
    y0 = rest_state(twin.model, twin.theta(variant), rec.inputs.values[0], rest_signals(twin.model))
    out = tune_filter(flt, rec.inputs, rec.obs, y0, Q_GRID)
    warmup = min(360, int(0.25 * float(np.max(part.time))))
    scores = {qq: _forecast_error(twin, part, variant, {**out, "q": qq}, horizon, warmup) for qq in Q_FORECAST}
    out["q"] = min(scores, key=lambda k: (scores[k], k))
    return out


def default_organs(kinds: Sequence[str]) -> list[str]:
    """The organs the observation models of ``kinds`` call for (`ObservationModel.default_organs`)."""
    from ..registry import observation_models

    by_kind = {cls.kind: cls for cls in observation_models().values()}
    organs: list[str] = []
    for kind in kinds:
        for organ in getattr(by_kind.get(kind), "default_organs", ()):
            if organ not in organs:
                organs.append(organ)
    return organs


def calibrate(record, organs: Sequence[str] | None = None, *, hybrid: bool = True, seed: int = 0,
              noise: str = "ar1", fit: Sequence[str] | None = None, population: str = "adult",
              settings: FitSettings | None = None, ignore: Sequence[str] = (), shared=None, **options) -> Twin:
    """Calibrate a twin of one patient from a record (path or `Timeline`).

    Arguments:
        organs: organ names of the composition (its mechanistic core); default: the organs
            the record's observation kinds call for (`default_organs`).
        hybrid: add residual networks where the organs declare slots.
        seed: all random draws (multistart, network initialisation); same seed, same twin.
        noise: error form, for the observation models that offer one (``ar1``,
            ``gaussian``, ``student_t`` for ``cgm``).
        fit: parameters to fit (default: each organ's `Organ.calibrated`); those no
            observation of the record informs are left at their prior.
        population: prefix of the bundled patients that make the prior (``"adult"``).
        ignore: observation kinds of the record to leave out.
        shared: a population directory (`calibrate_population`) or `Population`: its
            networks are used as they are, and only the patient's parameters and
            conditioning vector are fitted (the organs default to the population's).
        settings / options: `FitSettings`, or its fields as keywords.
    """
    from ..registry import corrections
    from ..simulate import require_x64

    require_x64()
    tl, source = read_record(record)
    settings = FitSettings(seed=seed, **options) if settings is None else settings
    if len(tl) == 0:
        raise CalibrationError(f"{source}: the record is empty (no events to calibrate against)")
    if ignore:  # left out of everything the twin does with its record (fit, filter tuning, what-ifs)
        tl = tl.where(~np.isin(tl.kind.astype(str), list(ignore)))
    kinds = [k for k in observed_kinds(tl) if k not in ignore]
    if not kinds:
        raise CalibrationError(f"{source}: the record has no readings of an observation kind to calibrate against")
    pop = None
    if shared is not None:
        from .shared import Population, load_population

        pop = shared if isinstance(shared, Population) else load_population(shared)
        if organs and list(organs) != pop.organs:
            raise CalibrationError(f"the population was trained on organs {pop.organs}, not {list(organs)}")
        organs, hybrid = pop.organs, pop.hybrid
        settings = replace(settings, slots=tuple(pop.meta["spec"]["slots"]))
    organs = default_organs(kinds) if not organs else list(organs)
    model = compose(organs)
    if hybrid is not False and settings.slots:
        slots_of(model, settings.slots)  # an unknown slot is refused before any work
    observations = observation_models_for(model, kinds, source, {"noise": noise})
    rec = prepare_record(model, tl, observations, [c() for c in corrections().values()], source)
    result, space = fit_record(model, rec, observations, population_space(model, fit, population), settings, hybrid)
    if pop is not None:
        result.diagnostics["population"] = {"directory": str(pop.directory), "networks_sha256": pop.networks_sha,
                                            "conditioning": np.asarray(result.hybrid.cond).tolist()
                                            if result.hybrid is not None else None}
    twin = Twin(list(organs), [(om.name, om.option_values()) for om in observations], space, result, settings, {},
                result.scale, source, timeline_text(tl), model)
    # the filters of the population twin and of the calibrated mechanism are tuned apart; the
    # hybrid shares the mechanism's (its networks change the dynamics little; one compile less)
    twin.filters = {v: tune_variant(twin, tl, v) for v in VARIANTS[:2]}
    twin.filters["twin"] = dict(twin.filters["mechanistic"])
    return twin
