"""Plugin discovery: every organ and timeline kind comes through pluggy.

Plugins are modules named in the ``physiotwin`` entry-point group of installed
distributions; the built-in organs are registered there too (see pyproject.toml),
so a third-party organ is discovered exactly like ``glucose``.
"""

from __future__ import annotations

import functools
import inspect

import pluggy

from .contract import Organ

__all__ = ["PluginError", "plugin_manager", "organ_classes", "get_organ", "timeline_kinds", "observation_models"]


class PluginError(RuntimeError):
    """A plugin that registers something invalid or already taken."""


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with all installed plugins loaded."""
    from physiotwin import plugins as hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    return pm


def _plugin_name(pm: pluggy.PluginManager, impl) -> str:
    return pm.get_name(impl.plugin) or repr(impl.plugin)


def _collect(hook_name: str, check) -> dict:
    pm = plugin_manager()
    found: dict = {}
    origin: dict = {}
    hook = getattr(pm.hook, hook_name)
    for impl in hook.get_hookimpls():
        plugin = _plugin_name(pm, impl)

        def register(thing, _plugin=plugin):
            name = check(thing, _plugin)
            if name in found and found[name] is not thing:
                raise PluginError(
                    f"plugin {_plugin!r} registers {name!r}, already registered by plugin {origin[name]!r}"
                )
            found[name] = thing
            origin[name] = _plugin

        impl.function(register=register)
    return found


def _check_organ(cls, plugin: str) -> str:
    if not (inspect.isclass(cls) and issubclass(cls, Organ)):
        raise PluginError(f"plugin {plugin!r} registered {cls!r}, which is not a physiotwin.Organ subclass")
    if inspect.isabstract(cls):
        raise PluginError(f"plugin {plugin!r}: organ {cls.__name__} does not implement {sorted(cls.__abstractmethods__)}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"plugin {plugin!r}: organ {cls.__name__} needs a `name` that is a Python identifier")
    return name


def _check_kind(kind, plugin: str) -> str:
    from .timeline import TimelineKind

    if not isinstance(kind, TimelineKind):
        raise PluginError(f"plugin {plugin!r} registered {kind!r}, which is not a physiotwin.TimelineKind")
    return kind.name


@functools.lru_cache(maxsize=1)
def organ_classes() -> dict[str, type[Organ]]:
    """``{name: Organ subclass}`` for every organ the installed plugins provide."""
    return dict(sorted(_collect("register_organs", _check_organ).items()))


@functools.lru_cache(maxsize=1)
def timeline_kinds() -> dict:
    """``{name: TimelineKind}`` for every timeline kind the installed plugins provide."""
    return dict(sorted(_collect("register_timeline_kinds", _check_kind).items()))


def get_organ(name: str) -> type[Organ]:
    organs = organ_classes()
    if name not in organs:
        from .composer import WiringError

        raise WiringError(f"unknown organ {name!r}; installed organs: {', '.join(organs) or 'none'}")
    return organs[name]


def _check_observation(cls, plugin: str) -> str:
    from .calibration.observation import ObservationModel

    if not (inspect.isclass(cls) and issubclass(cls, ObservationModel)):
        raise PluginError(f"plugin {plugin!r} registered {cls!r}, which is not an ObservationModel subclass")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise PluginError(f"plugin {plugin!r}: observation model {cls.__name__} needs a `name` identifier")
    return name


@functools.lru_cache(maxsize=1)
def observation_models() -> dict:
    """``{name: ObservationModel subclass}`` from the installed plugins."""
    return dict(sorted(_collect("register_observation_models", _check_observation).items()))
