"""The process-wide plugin manager.

Plugins are the modules named in the ``physiotwin`` entry-point group of installed
distributions; the built-in organs and every other built-in plugin are listed there
too (see pyproject.toml), so a third-party plugin is discovered exactly like ours.
Hooks are called through ``plugin_manager().hook``; `physiotwin.registry` collects
and checks what they register.
"""

from __future__ import annotations

import functools

import pluggy

from .errors import PluginError

__all__ = ["plugin_manager", "plugin_of_module"]


@functools.lru_cache(maxsize=1)
def plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, with all installed plugins loaded and their hooks checked.

    Raises `PluginError` when a plugin implements a hook that does not exist (a
    misspelled hook name would otherwise be ignored)."""
    from physiotwin import plugins as hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        raise PluginError(f"plugin {pm.get_name(err.plugin)!r}: {err}") from None
    return pm


def plugin_of_module(module: str | None) -> str:
    """The name of the plugin a module belongs to (for messages), or the module name."""
    if not module:
        return "?"
    for name, plugin in plugin_manager().list_name_plugin():
        if getattr(plugin, "__name__", None) == module:
            return name
    return module
