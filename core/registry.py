"""What the installed plugins provide, collected through pluggy and checked once.

Each ``register_*`` hook is called through ``plugin_manager().hook`` with a
``register`` callback; the callback checks every registered thing (its type, its
name, its units) and refuses a name taken twice, naming both plugins. Results are
cached for the process.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Callable

from .contract import Organ
from .correction import InputCorrection
from .errors import PluginError, WiringError
from .extensions import Control, Controller, Demo, ForecastMetric, Goal, PatientTable, SeriesMetric, ValidationStudy
from .hooks import plugin_manager, plugin_of_module
from .kinds import Signal, TimelineKind
from .observation import ObservationModel

__all__ = ["PluginError", "plugin_manager", "organ_classes", "get_organ", "timeline_kinds", "timeline_signals",
           "observation_models", "corrections", "forecast_metrics", "series_metrics", "patient_tables", "demos",
           "validation_studies", "controls", "goals", "controllers", "importers", "reports", "record_checks"]


def _collect(hook_name: str, check: Callable[[object, str], str]) -> dict:
    """Call one hook through the plugin manager; ``{name: thing}`` of what was registered."""
    found: dict = {}
    origin: dict = {}

    def register(thing):
        plugin = plugin_of_module(sys._getframe(1).f_globals.get("__name__"))
        name = check(thing, plugin)
        if name in found and found[name] is not thing:
            raise PluginError(f"plugin {plugin!r} registers {name!r}, already registered by plugin {origin[name]!r}")
        found[name] = thing
        origin[name] = plugin

    getattr(plugin_manager().hook, hook_name)(register=register)
    return found


def _named_class(base: type, what: str):
    def check(cls, plugin: str) -> str:
        if not (inspect.isclass(cls) and issubclass(cls, base)):
            raise PluginError(f"plugin {plugin!r} registered {cls!r}, which is not a {base.__name__} subclass")
        if inspect.isabstract(cls):
            raise PluginError(f"plugin {plugin!r}: {what} {cls.__name__} does not implement "
                              f"{sorted(cls.__abstractmethods__)}")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"plugin {plugin!r}: {what} {cls.__name__} needs a `name` that is a Python identifier")
        return name
    return check


def _named_instance(base: type, what: str):
    def check(thing, plugin: str) -> str:
        if not isinstance(thing, base):
            raise PluginError(f"plugin {plugin!r} registered {thing!r}, which is not a {base.__name__}")
        try:
            getattr(thing, "check", lambda: None)()
        except ValueError as err:
            raise PluginError(f"plugin {plugin!r}: {what}: {err}") from None
        return thing.name
    return check


@functools.lru_cache(maxsize=1)
def organ_classes() -> dict[str, type[Organ]]:
    """``{name: Organ subclass}`` for every organ the installed plugins provide."""
    return dict(sorted(_collect("register_organs", _named_class(Organ, "organ")).items()))


def get_organ(name: str) -> type[Organ]:
    organs = organ_classes()
    if name not in organs:
        raise WiringError(f"unknown organ {name!r}; installed organs: {', '.join(organs) or 'none'}")
    return organs[name]


@functools.lru_cache(maxsize=1)
def timeline_kinds() -> dict[str, TimelineKind]:
    """``{name: TimelineKind}`` for every timeline kind the installed plugins provide."""
    return dict(sorted(_collect("register_timeline_kinds", _named_instance(TimelineKind, "timeline kind")).items()))


@functools.lru_cache(maxsize=1)
def timeline_signals() -> dict[str, Signal]:
    """``{name: Signal}``: every signal the registered timeline kinds compile to."""
    out: dict[str, Signal] = {}
    for kind in timeline_kinds().values():
        for s in kind.signals:
            if s.name in out and out[s.name] != s:
                raise PluginError(f"timeline kind {kind.name!r} defines signal {s.name!r} differently from "
                                  f"another kind (list the same Signal object in both)")
            out[s.name] = s
    return dict(sorted(out.items()))


@functools.lru_cache(maxsize=1)
def observation_models() -> dict[str, type[ObservationModel]]:
    """``{name: ObservationModel subclass}`` from the installed plugins."""
    found = _collect("register_observation_models", _named_class(ObservationModel, "observation model"))
    kinds = timeline_kinds()
    for name, cls in found.items():
        if cls.kind not in kinds or not kinds[cls.kind].fitted:
            raise PluginError(f"observation model {name!r} explains kind {cls.kind!r}, which is not a registered "
                              f"observation kind")
    return dict(sorted(found.items()))


@functools.lru_cache(maxsize=1)
def corrections() -> dict[str, type[InputCorrection]]:
    """``{name: InputCorrection subclass}``: unknowns about logged inputs a calibration may fit."""
    return dict(sorted(_collect("register_corrections", _named_class(InputCorrection, "correction")).items()))


@functools.lru_cache(maxsize=1)
def _metrics() -> dict:
    def check(thing, plugin):
        if not isinstance(thing, (ForecastMetric, SeriesMetric)):
            raise PluginError(f"plugin {plugin!r} registered {thing!r}, which is not a ForecastMetric or SeriesMetric")
        return f"{type(thing).__name__}:{thing.name}"
    return _collect("register_metrics", check)


def forecast_metrics(kind: str) -> list[ForecastMetric]:
    """Forecast metrics that apply to observation kind ``kind``, in registration order."""
    return [m for m in _metrics().values() if isinstance(m, ForecastMetric) and kind in m.kinds]


def series_metrics(kind: str) -> list[SeriesMetric]:
    """Summaries of a series of readings of kind ``kind``, in registration order."""
    return [m for m in _metrics().values() if isinstance(m, SeriesMetric) and kind in m.kinds]


@functools.lru_cache(maxsize=1)
def patient_tables() -> dict[str, PatientTable]:
    return dict(sorted(_collect("register_patient_tables", _named_instance(PatientTable, "patient table")).items()))


@functools.lru_cache(maxsize=1)
def demos() -> dict[str, Demo]:
    return dict(sorted(_collect("register_demos", _named_instance(Demo, "demo")).items()))


@functools.lru_cache(maxsize=1)
def validation_studies() -> dict[str, ValidationStudy]:
    return _collect("register_validation_studies", _named_instance(ValidationStudy, "validation study"))


@functools.lru_cache(maxsize=1)
def controls() -> dict[str, Control]:
    """``{name: Control}``: treatment settings ``physiotwin optimize`` may change."""
    return dict(sorted(_collect("register_controls", _named_instance(Control, "control")).items()))


@functools.lru_cache(maxsize=1)
def goals() -> dict[str, Goal]:
    """``{name: Goal}``: scores of readings ``physiotwin optimize`` may optimise or limit."""
    return dict(sorted(_collect("register_goals", _named_instance(Goal, "goal")).items()))


@functools.lru_cache(maxsize=1)
def controllers() -> dict:
    """``{name: Controller subclass}``: closed-loop controllers (``--controller NAME``)."""
    return dict(sorted(_collect("register_controllers", _named_class(Controller, "controller")).items()))


@functools.lru_cache(maxsize=1)
def importers() -> dict:
    """``{name: Importer}``: readers of device exports (``physiotwin import --format NAME``)."""
    from .importing import Importer

    return dict(sorted(_collect("register_importers", _named_instance(Importer, "importer")).items()))


@functools.lru_cache(maxsize=1)
def reports() -> dict:
    """``{name: Report}``: reports of a record and its twin (``physiotwin report``), in registration order."""
    from .report import Report

    return _collect("register_reports", _named_instance(Report, "report"))


@functools.lru_cache(maxsize=1)
def record_checks() -> dict:
    """``{name: RecordCheck}``: plausibility checks of records, in registration order."""
    from .extensions import RecordCheck

    return _collect("register_record_checks", _named_instance(RecordCheck, "record check"))
