"""Hook specifications: how packages extend physiotwin.

A plugin is any module listed under the ``physiotwin`` entry-point group of an
installed distribution (built-in organs use the very same group)::

    [project.entry-points.physiotwin]
    my_kidney = "my_package.kidney"

The module implements one or more of the hooks below with `hookimpl`. Hooks use
callback-style registration: the host passes a ``register`` function and the
plugin calls it once per thing it provides, so the host can validate and refuse
duplicates with a message that names the plugin.
"""

from __future__ import annotations

import pluggy

PROJECT = "physiotwin"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookspec", "hookimpl", "register_organs", "register_timeline_kinds",
           "register_observation_models"]


@hookspec
def register_organs(register):
    """Provide organ classes.

    Call ``register(OrganClass)`` once for each `physiotwin.Organ` subclass the
    plugin provides. The organ's ``name`` must be unique across installed plugins.
    """


@hookspec
def register_timeline_kinds(register):
    """Provide timeline event kinds.

    Call ``register(physiotwin.TimelineKind(...))`` once per kind (e.g. ``carbs``,
    ``bolus``). A kind fixes the canonical unit its values are converted to, the
    allowed value range, and whether ``duration`` applies.
    """


@hookspec
def register_observation_models(register):
    """Provide observation models (how a model output becomes a recorded reading).

    Call ``register(ObservationClass)`` once per `physiotwin.calibration.ObservationModel`
    subclass (e.g. ``cgm``: subcutaneous glucose plus sensor noise). Its ``name`` must be
    unique across installed plugins.
    """
