"""Units at the boundary: one pint registry for the whole package.

Every state, parameter, input, output and flux port declares a unit string; the
composer and the timeline parser check and convert them here, once, when a model
or a timeline is built. Nothing in this module is ever called inside `jit`.

Plugins extend the registry through the ``register_units`` hook: new units
(``define_unit("my_unit = 6000 * picomole")``) and *substances* with a molar mass
(``define_substance("urea", 60.06)``), whose amounts, concentrations and rates then
convert between mass and moles when a kind or an observation names the substance as
its ``unit_context``. The registry is built on first use, after every plugin is loaded.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import pint

from .errors import UnitError

__all__ = ["registry", "UnitError", "parse_unit", "conversion", "same_dimension", "define_unit",
           "define_substance"]

_STATE: dict[str, pint.UnitRegistry] = {}


def define_unit(reg: pint.UnitRegistry, definition: str) -> None:
    """Add (or replace) a unit, in pint's definition syntax."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.define(definition)


def define_substance(reg: pint.UnitRegistry, name: str, molar_mass: float) -> None:
    """A pint context ``name`` that converts amounts, concentrations and rates of the
    substance between mass and moles through its molar mass (g/mol)."""
    if not molar_mass > 0:
        raise UnitError(f"substance {name!r}: molar mass must be > 0 g/mol, got {molar_mass!r}")
    ctx = pint.Context(name)
    mm = reg.Quantity(float(molar_mass), "g/mol")
    for per in ("", " / [length] ** 3", " / [time]"):
        ctx.add_transformation(f"[substance]{per}", f"[mass]{per}", lambda r, x, mm=mm: x * mm)
        ctx.add_transformation(f"[mass]{per}", f"[substance]{per}", lambda r, x, mm=mm: x / mm)
    reg.add_context(ctx)


def registry() -> pint.UnitRegistry:
    """The unit registry, with every plugin's units and substances (built once)."""
    if "reg" not in _STATE:
        from .hooks import plugin_manager

        reg = pint.UnitRegistry(on_redefinition="ignore", cache_folder=None)
        plugin_manager().hook.register_units(define_unit=lambda d: define_unit(reg, d),
                                             define_substance=lambda n, m: define_substance(reg, n, m))
        _STATE["reg"] = reg
    return _STATE["reg"]


@functools.lru_cache(maxsize=None)
def parse_unit(text: str) -> pint.Unit:
    """Parse a unit string; ``""`` and ``"1"`` mean dimensionless."""
    reg = registry()
    text = (text or "").strip()
    if text in ("", "1", "dimensionless"):
        return reg.dimensionless
    try:
        return reg.parse_units(text)
    except Exception:  # pint raises several types here
        raise UnitError(f"unknown unit {text!r}") from None


def same_dimension(a: str, b: str) -> bool:
    return parse_unit(a).dimensionality == parse_unit(b).dimensionality


@functools.lru_cache(maxsize=None)
def conversion(src: str, dst: str, context: str | None = None) -> tuple[float, float]:
    """Return ``(scale, offset)`` with ``value_dst = scale * value_src + offset``.

    ``context`` names a substance (see `define_substance`) for mass <-> moles.
    Raises `UnitError` when the two units are not of the same dimension.
    """
    reg = registry()
    u_src, u_dst = parse_unit(src), parse_unit(dst)
    try:
        with reg.context(context) if context else contextlib.nullcontext():
            zero = reg.Quantity(0.0, u_src).to(u_dst).magnitude
            one = reg.Quantity(1.0, u_src).to(u_dst).magnitude
    except pint.DimensionalityError:
        raise UnitError(
            f"cannot convert {src!r} ({u_src.dimensionality}) to {dst!r} ({u_dst.dimensionality})"
        ) from None
    except KeyError:
        raise UnitError(f"unknown substance {context!r} (no plugin defines it)") from None
    return float(one - zero), float(zero)

