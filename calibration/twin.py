"""The calibrated patient twin: fit, save, load, forecast.

```python
import physiotwin as pt
twin = pt.calibrate("record.csv", ["glucose"], hybrid=True, seed=0)
twin.save("twin/")
twin = pt.Twin.load("twin/")            # bit-identical
fc = twin.forecast("next_days.csv", horizons=[30, 60])   # xarray Dataset
```

A twin directory holds

- ``twin.json``: organs, observation model, fitted parameter space and values (also
  in readable units), meal corrections, settings, fit history and diagnostics,
  the model's state/parameter names (checked on load), and SHA-256 checksums of
- ``arrays.npz``: the float64 arrays of the fit (exact), and
- ``networks.eqx``: the residual networks (equinox serialisation), for a hybrid;
- ``record.csv``: the record it was fitted on (evaluation fits its baselines on it).

Three variants of the same twin can forecast, for honest comparisons:
``"population"`` (population parameters, no fitting), ``"mechanistic"`` (the
calibrated mechanism without residuals) and ``"twin"`` (the final fit: the hybrid
when there is one).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import xarray as xr

from ..composer import Model, WiringError, compose
from ..registry import timeline_kinds
from ..timeline import Timeline, read_timeline
from .data import prepare_record
from .fit import FitResult, FitSettings, fit_record
from .forecast import make_filter, run_forecast
from .grid import substeps
from .hybrid import Hybrid
from .observation import ObservationModel, get_observation_model
from .space import CalibrationError, ParameterSpace, _inverse, population_space

__all__ = ["Twin", "TwinError", "calibrate", "VARIANTS"]

FORMAT = "physiotwin-twin/1"
VARIANTS = ("population", "mechanistic", "twin")
# filter settings tried at calibration: process noise (fraction of each state's typical size per
# minute), sensor-error correlation over 5 min, sensor-error SD (mg/dL)
Q_GRID = (0.0003, 0.001, 0.003, 0.01)
PHI_GRID = (0.0, 0.8, 0.9, 0.95)
SIGMA_GRID = (4.0, 8.0, 12.0, 16.0)
Q_FORECAST = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)  # process noise, chosen by forecast RMSE


class TwinError(ValueError):
    """A twin directory that cannot be loaded or used; names the file."""


def _read(record, source=None) -> tuple[Timeline, str]:
    if isinstance(record, Timeline):
        return record, source or record.source
    path = Path(record)
    return read_timeline(path, kinds=timeline_kinds()), path.name


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Twin:
    """A patient twin: a composition, fitted values, and what is needed to forecast."""

    def __init__(self, organs: Sequence[str], obs_name: str, obs_options: dict, space: ParameterSpace,
                 result: FitResult, settings: FitSettings, filters: dict[str, dict], scale: np.ndarray,
                 record_source: str, record_text: str | None = None, model: Model | None = None):
        self.organs = list(organs)
        self.model = compose(self.organs) if model is None else model
        self.obs_name = obs_name
        self.obs_options = dict(obs_options)
        self.obs_model: ObservationModel = get_observation_model(obs_name, **obs_options)
        self.space = space
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

    def theta(self, variant: str = "twin") -> np.ndarray:
        """Full parameter vector (order ``model.param_names``) of a variant."""
        if variant == "population":
            return np.asarray(self.space.base)
        z = self.result.z if variant == "twin" else self.result.z_mech
        return np.asarray(self.space.theta(jnp.asarray(z)))

    def noise(self, variant: str = "twin") -> dict[str, float]:
        from .space import _KIND

        zn = self.result.noise if variant == "twin" else self.result.noise_mech
        out = {}
        for i, p in enumerate(self.obs_model.params):
            out[p.name] = float(_inverse(jnp.asarray(_KIND[p.transform]), jnp.asarray(p.lower), jnp.asarray(p.upper),
                                         jnp.asarray(zn[i])))
        return out

    def parameters(self, variant: str = "twin") -> dict[str, float]:
        """``{"organ.param": value}`` of the fitted parameters, in their declared units."""
        th = self.theta(variant)
        return {n: float(th[i]) for n, i in zip(self.space.names, self.space.index)}

    # ------------------------------------------------------------ forecasting
    def filter(self, variant: str, day0: float, settings: dict | None = None):
        """The state filter of a variant (``settings``: ``q``, ``phi``, ``sigma``; default: the tuned ones)."""
        hybrid = self.hybrid if variant == "twin" else None
        s = self.filters.get(variant) if settings is None else settings
        noise = self.noise(variant) if variant != "population" else self.noise("mechanistic")
        if s is not None:
            noise = {**noise, **{k: v for k, v in s.items() if k in noise}}
        return make_filter(self.model, self.obs_model, self.theta(variant), hybrid, noise, self.scale,
                           day0, substeps(self.model))

    def forecast_arrays(self, tl: Timeline, horizon: int, every: int = 5, variant: str = "twin",
                        settings: dict | None = None) -> dict[str, np.ndarray]:
        rec = prepare_record(self.model, tl, self.obs_model.kind, tl.source)
        flt = self.filter(variant, rec.day0, settings)
        y0 = self.model.initial_state(jnp.asarray(self.theta(variant)), rec.inputs.values[0])
        q = (self.filters.get(variant) if settings is None else settings or {}).get("q", Q_GRID[1])
        # (the record is already on the grid: the filter reuses its inputs and readings)
        return run_forecast(flt, tl, self.obs_model.kind, int(horizon), int(every), q, y0, rec.minutes,
                            rec.inputs, rec.obs)

    def forecast(self, record, horizons: Sequence[int] = (30, 60), every: int = 5, variant: str = "twin"
                 ) -> xr.Dataset:
        """Forecast the readings and plasma glucose at ``horizons`` (min) from every ``every``
        minutes of ``record`` (a path or `Timeline`); see `physiotwin.calibration.forecast`."""
        tl, source = _read(record)
        horizons = [int(h) for h in horizons]
        if not horizons or min(horizons) < 1:
            raise CalibrationError("horizons must be whole minutes >= 1")
        if int(every) < 1:
            raise CalibrationError("--every must be a whole number of minutes >= 1")
        res = self.forecast_arrays(tl, max(horizons), every, variant)
        h = np.asarray(horizons) - 1
        ds = xr.Dataset(
            {
                "cgm": (("origin", "horizon"), res["reading"][:, h],
                        {"units": "mg/dL", "long_name": "predicted CGM reading"}),
                "sensor_glucose": (("origin", "horizon"), res["sensor"][:, h],
                                   {"units": "mg/dL", "long_name": "predicted noise-free sensor glucose"}),
                "plasma_glucose": (("origin", "horizon"), res["plasma_glucose"][:, h],
                                   {"units": "mg/dL", "long_name": "predicted plasma glucose"}),
            },
            coords={"origin": ("origin", res["origin"].astype(float), {"units": "min", "long_name":
                                                                        "forecast origin since record start"}),
                    "horizon": ("horizon", np.asarray(horizons, dtype=float), {"units": "min"})},
            attrs={"record": source, "variant": variant, "organs": ",".join(self.organs),
                   "observation_model": self.obs_name,
                   **{f"filter_{k}": v for k, v in self.filters.get(variant, {}).items()},
                   "note": "each forecast uses readings and logged inputs up to its origin only"},
        )
        if tl.start is not None:
            ds = ds.assign_coords(origin_time=("origin", [np.datetime64(tl.start + timedelta(minutes=float(o)))
                                                          for o in res["origin"]]))
        if not np.all(np.isfinite(res["reading"])):
            ds.attrs["warning"] = "some forecasts are not finite (solver failure)"
        return ds

    # ------------------------------------------------------------ persistence
    def save(self, directory) -> Path:
        """Write the twin to ``directory`` (created; an existing twin there is replaced atomically)."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".twin-", dir=directory.parent))
        try:
            r = self.result
            np.savez(tmp / "arrays.npz", z=r.z, z_mech=r.z_mech, noise=r.noise, noise_mech=r.noise_mech, meal=r.meal,
                     init=r.init, end_state=r.end_state, scale=self.scale)
            files = {"arrays.npz": _sha(tmp / "arrays.npz")}
            if r.hybrid is not None:
                eqx.tree_serialise_leaves(tmp / "networks.eqx", r.hybrid)
                files["networks.eqx"] = _sha(tmp / "networks.eqx")
            if self.record_text is not None:
                (tmp / "record.csv").write_text(self.record_text)
                files["record.csv"] = _sha(tmp / "record.csv")
            meta = {
                "format": FORMAT,
                "organs": self.organs,
                "state_names": list(self.model.state_names),
                "param_names": list(self.model.param_names),
                "observation_model": {"name": self.obs_name, "options": self.obs_options},
                "space": self.space.to_json(),
                "settings": asdict(self.settings),
                "filters": self.filters,
                "hybrid": None if r.hybrid is None else r.hybrid.spec(),
                "record": self.record_source,
                "parameters": {v: self.parameters(v) for v in VARIANTS},
                "noise": {v: self.noise(v) for v in VARIANTS if v != "population"},
                "meal_corrections": [float(v) for v in np.exp(r.meal)],
                "diagnostics": r.diagnostics,
                "history": r.history,
                "files": files,
            }
            (tmp / "twin.json").write_text(json.dumps(meta, indent=1, default=_json_default))
            if directory.exists():
                if not (directory / "twin.json").exists() and any(directory.iterdir()):
                    raise TwinError(f"{directory}: exists and is not a twin directory; not overwriting it")
                shutil.rmtree(directory)
            tmp.rename(directory)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory) -> "Twin":
        directory = Path(directory)
        meta_path = directory / "twin.json"
        if not meta_path.is_file():
            raise TwinError(f"{directory}: not a twin directory (no twin.json)")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TwinError(f"{meta_path}: corrupted ({err})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise TwinError(f"{meta_path}: not a {FORMAT} file")
        for name, digest in meta.get("files", {}).items():
            p = directory / name
            if not p.is_file():
                raise TwinError(f"{p}: missing")
            if _sha(p) != digest:
                raise TwinError(f"{p}: corrupted (checksum does not match twin.json)")
        try:
            model = compose(meta["organs"])
        except WiringError as err:
            raise TwinError(f"{meta_path}: the twin's organs {meta['organs']} cannot be composed here: {err}") from None
        except (KeyError, TypeError) as err:
            raise TwinError(f"{meta_path}: corrupted (no usable 'organs': {err})") from None
        if list(model.state_names) != meta.get("state_names") or list(model.param_names) != meta.get("param_names"):
            raise TwinError(f"{meta_path}: the installed organs {meta['organs']} no longer declare the states/parameters "
                            f"this twin was fitted with (another organ version or composition)")
        try:
            arrays = np.load(directory / "arrays.npz")
            hybrid = None
            if meta.get("hybrid") is not None:
                hybrid = eqx.tree_deserialise_leaves(directory / "networks.eqx",
                                                     Hybrid.from_spec(model, meta["hybrid"]))
            result = FitResult(z=arrays["z"], z_mech=arrays["z_mech"], noise=arrays["noise"],
                               noise_mech=arrays["noise_mech"], meal=arrays["meal"], init=arrays["init"],
                               end_state=arrays["end_state"], hybrid=hybrid, scale=arrays["scale"],
                               history=meta.get("history", []), diagnostics=meta.get("diagnostics", {}))
            space = ParameterSpace.from_json(meta["space"])
            settings = FitSettings(**{k: v for k, v in meta["settings"].items()
                                      if k in FitSettings.__dataclass_fields__})
            filters = meta["filters"]
            obs = meta["observation_model"]
            if space.names and max(space.index) >= len(model.param_names):
                raise ValueError("fitted parameter index out of range")
        except (KeyError, ValueError, TypeError, RuntimeError, OSError, WiringError) as err:
            raise TwinError(f"{directory}: cannot be read as a twin of {meta.get('organs')} "
                            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
        record_text = (directory / "record.csv").read_text() if (directory / "record.csv").is_file() else None
        return cls(meta["organs"], obs["name"], obs["options"], space, result, settings, filters, arrays["scale"],
                   meta.get("record", ""), record_text, model)

    def training_timeline(self) -> Timeline | None:
        """The record the twin was fitted on (saved with it), or None."""
        if self.record_text is None:
            return None
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / (Path(self.record_source).name or "record.csv")
            path = path.with_suffix(".csv")
            path.write_text(self.record_text)
            return read_timeline(path, kinds=timeline_kinds())

    def __repr__(self):
        kind = "hybrid" if self.hybrid is not None else "mechanistic"
        return f"Twin({kind}, organs={self.organs}, record={self.record_source!r}, " \
               f"validation RMSE={self.result.diagnostics.get('validation_rmse', math.nan):.1f} mg/dL)"


def timeline_text(tl: Timeline) -> str:
    """A timeline as CSV text (minutes since its start; the start as a comment)."""
    frame = tl.to_frame()
    head = f"# start: {tl.start.isoformat()}\n" if tl.start is not None else ""
    return head + frame.to_csv(index=False, float_format="%.10g")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _forecast_rmse(twin: Twin, tl: Timeline, variant: str, settings: dict, horizon: int, warmup: int) -> float:
    from .data import readings_on_grid

    res = twin.forecast_arrays(tl, horizon, 5, variant, settings)
    o = res["origin"]
    minutes = int(np.ceil(float(np.max(tl.time)) + 1e-9))
    target = readings_on_grid(tl, twin.obs_model.kind, minutes + horizon)[o + horizon - 1]
    pred = res["reading"][:, horizon - 1]
    m = (o >= warmup) & np.isfinite(target) & np.isfinite(pred)
    return float(np.sqrt(np.mean((pred[m] - target[m]) ** 2))) if m.any() else math.inf


def _tune_filter(twin: Twin, tl: Timeline, variant: str, days: float = 2.0, horizon: int = 30) -> dict:
    """Filter settings for a variant, from the last ``days`` of the fitted record (known at
    calibration): the sensor error's SD and correlation by the predictive likelihood of the
    readings (`physiotwin.calibration.forecast.tune_filter`), then the process noise ``q`` by
    the RMSE of the ``horizon``-minute forecasts. The likelihood alone trusts a model that
    fits the past well but drifts over the next hour (on 2 of 10 simglucose adults it chose
    q = 3e-4 where 0.1 forecast 30 % better)."""
    from .data import split_record
    from .forecast import tune_filter

    end = float(np.max(tl.time))
    part = split_record(tl, max(0.0, end - days * 1440.0))[1] if end > days * 1440.0 else tl
    rec = prepare_record(twin.model, part, twin.obs_model.kind, tl.source)
    flt = twin.filter(variant, rec.day0, {})
    y0 = twin.model.initial_state(jnp.asarray(twin.theta(variant)), rec.inputs.values[0])
    ar1 = getattr(twin.obs_model, "noise", None) == "ar1"
    q, phi, sigma = tune_filter(flt, part, twin.obs_model.kind, y0, Q_GRID, PHI_GRID if ar1 else (0.0,), SIGMA_GRID,
                                gi=rec.inputs, obs=rec.obs)
    out = {"q": q, "sigma": sigma}
    if ar1:
        out["phi"] = phi
    warmup = min(360, int(0.25 * float(np.max(part.time))))
    scores = {qq: _forecast_rmse(twin, part, variant, {**out, "q": qq}, horizon, warmup) for qq in Q_FORECAST}
    out["q"] = min(scores, key=lambda k: (scores[k], k))
    return out


def calibrate(record, organs: Sequence[str] = ("glucose",), *, hybrid: bool = True, seed: int = 0,
              observation: str = "cgm", noise: str = "ar1", fit: Sequence[str] | None = None,
              population: str = "adult", settings: FitSettings | None = None, **options) -> Twin:
    """Calibrate a twin of one patient from a record (path or `Timeline`).

    Arguments:
        organs: organ names of the composition (its mechanistic core).
        hybrid: add residual networks where the organs declare slots.
        seed: all random draws (multistart, network initialisation); same seed, same twin.
        observation / noise: observation model and its noise option (``ar1``, ``gaussian``,
            ``student_t`` for ``cgm``).
        fit: parameters to fit (default: each organ's `Organ.calibrated`).
        population: prefix of the bundled patients that make the prior (``"adult"``).
        settings / options: `FitSettings`, or its fields as keywords.
    """
    from ..simulate import require_x64

    require_x64()
    tl, source = _read(record)
    if settings is None:
        settings = FitSettings(seed=seed, **options)
    model = compose(list(organs))
    obs_model = get_observation_model(observation, noise=noise)
    space = population_space(model, fit, population)
    rec = prepare_record(model, tl, obs_model.kind, source)
    result = fit_record(model, rec, obs_model, space, settings, hybrid)
    twin = Twin(list(organs), observation, {"noise": noise}, space, result, settings, {}, result.scale, source,
                timeline_text(tl), model)
    # the filter of the population twin and of the calibrated mechanism are tuned apart; the
    # hybrid shares the mechanism's (its networks change the dynamics little; one compile less)
    twin.filters = {v: _tune_filter(twin, tl, v) for v in VARIANTS[:2]}
    twin.filters["twin"] = dict(twin.filters["mechanistic"])
    return twin
