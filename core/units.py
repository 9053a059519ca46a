"""Units at the boundary: one pint registry for the whole package.

Every state, parameter, input, output and flux port declares a unit string; the
composer and the timeline parser check and convert them here, once, when a model
or a timeline is built. Nothing in this module is ever called inside `jit`.

Insulin is counted in international units, ``U`` (alias ``IU``), defined as
6000 pmol, the conversion the UVA/Padova simulator uses (Dalla Man 2007;
simglucose). pint's own ``U`` (enzyme unit) is replaced by it.
"""

from __future__ import annotations

import functools
import warnings

import pint

__all__ = ["ureg", "UnitError", "parse_unit", "conversion", "same_dimension"]

GLUCOSE_MOLAR_MASS = 180.156  # g/mol, used to read CGM values given in mmol/L
SODIUM_MOLAR_MASS = 22.98977  # g/mol, used to read sodium intake given in g/day


class UnitError(ValueError):
    """A unit string that cannot be parsed, or two units that cannot be converted."""


def _make_registry() -> pint.UnitRegistry:
    reg = pint.UnitRegistry(on_redefinition="warn", cache_folder=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg.define("insulin_unit = 6000 * picomole = U = IU")
    # a substance's amounts, concentrations and rates convert between mass and moles
    # through its molar mass (contexts "glucose" and "sodium")
    for name, molar_mass in (("glucose", GLUCOSE_MOLAR_MASS), ("sodium", SODIUM_MOLAR_MASS)):
        ctx = pint.Context(name)
        mm = reg.Quantity(molar_mass, "g/mol")
        for per in ("", " / [length] ** 3", " / [time]"):
            ctx.add_transformation(f"[substance]{per}", f"[mass]{per}", lambda r, x, mm=mm: x * mm)
            ctx.add_transformation(f"[mass]{per}", f"[substance]{per}", lambda r, x, mm=mm: x / mm)
        reg.add_context(ctx)
    return reg


ureg = _make_registry()


@functools.lru_cache(maxsize=None)
def parse_unit(text: str) -> pint.Unit:
    """Parse a unit string; ``""`` and ``"1"`` mean dimensionless."""
    text = (text or "").strip()
    if text in ("", "1", "dimensionless"):
        return ureg.dimensionless
    try:
        return ureg.parse_units(text)
    except Exception:  # pint raises several types here
        raise UnitError(f"unknown unit {text!r}") from None


def same_dimension(a: str, b: str) -> bool:
    return parse_unit(a).dimensionality == parse_unit(b).dimensionality


@functools.lru_cache(maxsize=None)
def conversion(src: str, dst: str, context: str | None = None) -> tuple[float, float]:
    """Return ``(scale, offset)`` with ``value_dst = scale * value_src + offset``.

    Raises `UnitError` when the two units are not of the same dimension.
    """
    u_src, u_dst = parse_unit(src), parse_unit(dst)
    try:
        if context:
            with ureg.context(context):
                zero = ureg.Quantity(0.0, u_src).to(u_dst).magnitude
                one = ureg.Quantity(1.0, u_src).to(u_dst).magnitude
        else:
            zero = ureg.Quantity(0.0, u_src).to(u_dst).magnitude
            one = ureg.Quantity(1.0, u_src).to(u_dst).magnitude
    except pint.DimensionalityError:
        raise UnitError(
            f"cannot convert {src!r} ({u_src.dimensionality}) to {dst!r} ({u_dst.dimensionality})"
        ) from None
    return float(one - zero), float(zero)
