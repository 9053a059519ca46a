"""Hook specifications: how packages extend physiotwin.

A plugin is any module listed under the ``physiotwin`` entry-point group of an
installed distribution (built-in organs and the other built-in plugins use the very
same group)::

    [project.entry-points.physiotwin]
    my_kidney = "my_package.kidney"

The module implements one or more of the hooks below with `hookimpl`. Hooks use
callback-style registration: the host passes a ``register`` function and the
plugin calls it once per thing it provides, so the host can validate and refuse
duplicates with a message that names the plugin. An implementation may take fewer
arguments than its specification. A module that implements a hook not listed here
is refused when plugins load (a misspelled hook name fails loudly).

Everything a domain brings reaches the generic core this way: organs, timeline
kinds and their signals, units and substances, observation models, input
corrections, metrics, patient tables, demos, validation studies, importers of device
exports, reports and the plausibility checks every record goes through.
"""

from __future__ import annotations

import pluggy

PROJECT = "physiotwin"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookspec", "hookimpl", "register_organs", "register_timeline_kinds", "register_units",
           "register_observation_models", "register_corrections", "register_metrics", "register_patient_tables",
           "register_demos", "register_validation_studies", "register_controls", "register_goals",
           "register_controllers", "register_importers", "register_reports", "register_record_checks"]


@hookspec
def register_organs(register):
    """Provide organ classes.

    Call ``register(OrganClass)`` once for each `physiotwin.Organ` subclass the
    plugin provides. The organ's ``name`` must be unique across installed plugins.
    """


@hookspec
def register_timeline_kinds(register):
    """Provide timeline event kinds, with the signals input kinds compile to.

    Call ``register(physiotwin.TimelineKind(...))`` once per kind. A kind fixes the
    canonical unit its values are converted to, the allowed value range, whether
    ``duration`` applies, whether it is an input, an observation or ground truth, and
    (for inputs) the `physiotwin.Signal` objects organs read as ``timeline.<signal>``.
    """


@hookspec
def register_units(define_unit, define_substance):
    """Provide units and substances.

    ``define_unit("name = definition = symbol")`` adds a unit in pint's syntax;
    ``define_substance(name, molar_mass)`` (g/mol) lets amounts and concentrations of a
    substance convert between mass and moles wherever a kind names it as its
    ``unit_context``. Called once, when units are first needed.
    """


@hookspec
def register_observation_models(register):
    """Provide observation models (how a model output becomes a recorded reading).

    Call ``register(ObservationClass)`` once per `physiotwin.ObservationModel` subclass.
    Its ``name`` must be unique, and its ``kind`` a registered observation kind.
    """


@hookspec
def register_corrections(register):
    """Provide input corrections: per-event unknowns of logged inputs that a calibration fits.

    Call ``register(CorrectionClass)`` once per `physiotwin.InputCorrection` subclass.
    """


@hookspec
def register_metrics(register):
    """Provide evaluation metrics per observation kind.

    Call ``register(physiotwin.ForecastMetric(...))`` for scores of forecasts and
    ``register(physiotwin.SeriesMetric(...))`` for summaries of a series of readings.
    """


@hookspec
def register_patient_tables(register):
    """Provide bundled patient tables: ``register(physiotwin.PatientTable(...))``."""


@hookspec
def register_demos(register):
    """Provide what ``physiotwin demo`` runs: ``register(physiotwin.Demo(...))``."""


@hookspec
def register_validation_studies(register):
    """Provide validation studies (``python -m physiotwin.validation``):
    ``register(physiotwin.ValidationStudy(...))``."""


@hookspec
def register_controls(register):
    """Provide treatment settings ``physiotwin optimize`` may change:
    ``register(physiotwin.Control(...))``."""


@hookspec
def register_goals(register):
    """Provide scores of a series of readings that ``physiotwin optimize`` may optimise or
    limit: ``register(physiotwin.Goal(...))``."""


@hookspec
def register_controllers(register):
    """Provide closed-loop controllers: ``register(MyController)``, a subclass of
    `physiotwin.control.Controller`."""


@hookspec
def register_importers(register):
    """Provide readers of device and data-system exports (``physiotwin import``):
    ``register(physiotwin.importing.Importer(...))``."""


@hookspec
def register_reports(register):
    """Provide reports of a record and its twin (``physiotwin report``):
    ``register(physiotwin.report.Report(...))``."""


@hookspec
def register_record_checks(register):
    """Provide plausibility checks every record goes through before it is imported,
    calibrated, forecast or reported: ``register(physiotwin.plausibility.RecordCheck(...))``."""
