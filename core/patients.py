"""Patient parameter tables: bundled virtual patients and user tables.

A patient table has one row per patient, a ``patient`` column with the name, and
one column per parameter. Columns are matched to the parameters of the composed
organs by name: bare (``Vg``) when only one organ in the composition declares that
name, or qualified (``glucose.Vg``). Parameters without a column take the organ's
nominal value. Columns that no installed organ declares are refused (typos), except
the informational columns the bundled tables carry.
"""

from __future__ import annotations

import functools
import io
import math
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .composer import Model

__all__ = ["PatientError", "bundled_patients", "patient_table", "resolve_patients"]

# bundled tables, in listing order: (package, file)
_BUNDLED = (
    ("physiotwin.organs", "data/uva_padova_patients.csv"),
    ("physiotwin.organs", "data/dalla_man_2007_normal.csv"),
)


class PatientError(ValueError):
    """A patient name or table that cannot be used; the message names it."""


def _read_commented_csv(text: str, source: str) -> pd.DataFrame:
    """CSV whose leading lines starting with ``#`` are comments (patient names
    contain ``#``, so pandas' ``comment=`` cannot be used)."""
    lines = text.splitlines()
    body = [ln for ln in lines if not ln.lstrip().startswith("#")]
    if not body or not body[0].strip():
        raise PatientError(f"{source}: empty patient table")
    try:
        return pd.read_csv(io.StringIO("\n".join(body)), dtype=str, keep_default_na=False)
    except Exception as err:  # pandas parser errors
        raise PatientError(f"{source}: not a readable CSV table ({err})") from None


@functools.lru_cache(maxsize=1)
def bundled_patients() -> pd.DataFrame:
    """All bundled virtual patients, one row each (index: patient name)."""
    frames = []
    for package, name in _BUNDLED:
        text = resources.files(package).joinpath(name).read_text()
        frame = _read_commented_csv(text, name)
        frame["source"] = name
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    numeric = [c for c in table.columns if c not in ("patient", "source")]
    table[numeric] = table[numeric].replace("", np.nan).astype(float)
    return table.set_index("patient")


def _informational_columns() -> set[str]:
    return set(bundled_patients().columns) - {"source"}


def patient_table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read a user patient table (CSV path or DataFrame) into a frame indexed by
    ``patient``, values still unvalidated strings/numbers."""
    if isinstance(source, pd.DataFrame):
        frame, name = source.copy(), "<DataFrame>"
        if "patient" not in frame.columns:
            frame = frame.reset_index().rename(columns={"index": "patient"}) if frame.index.name in (None, "patient") else frame
    else:
        path = Path(source)
        name = path.name
        try:
            text = path.read_text()
        except OSError as err:
            raise PatientError(f"{name}: cannot read patient table ({err.strerror})") from None
        frame = _read_commented_csv(text, name)
    if "patient" not in frame.columns:
        raise PatientError(f"{name}: missing column 'patient' (one row per patient, named in 'patient')")
    frame.attrs["source"] = name
    if frame["patient"].duplicated().any():
        dup = frame["patient"][frame["patient"].duplicated()].iloc[0]
        raise PatientError(f"{name}: patient {dup!r} appears twice")
    return frame.set_index("patient")


def _column_map(model: Model, columns: Sequence[str], source: str) -> dict[str, str]:
    """Map table columns to qualified parameter names of ``model``."""
    from .registry import organ_classes

    by_bare: dict[str, list[str]] = {}
    for q in model.param_names:
        by_bare.setdefault(q.split(".", 1)[1], []).append(q)
    known_anywhere = {p.name for cls in organ_classes().values() for p in cls.params}
    known_anywhere |= {f"{cls.name}.{p.name}" for cls in organ_classes().values() for p in cls.params}
    known_anywhere |= _informational_columns()
    mapping = {}
    for col in columns:
        if col == "source":
            continue
        if col in model.param_names:
            mapping[col] = col
        elif col in by_bare:
            if len(by_bare[col]) > 1:
                raise PatientError(f"{source}: column {col!r} is ambiguous in this composition; "
                                   f"use one of {', '.join(by_bare[col])}")
            mapping[col] = by_bare[col][0]
        elif col not in known_anywhere:
            raise PatientError(f"{source}: column {col!r} is not a parameter of any installed organ")
    return mapping


def _params_array(model: Model, table: pd.DataFrame, source: str) -> np.ndarray:
    nominal = model.nominal_params()
    mapping = _column_map(model, list(table.columns), source)
    theta = np.empty((len(table), len(model.param_names)))
    for j, q in enumerate(model.param_names):
        cols = [c for c, target in mapping.items() if target == q]
        decl = model.declaration(q)
        for i, patient in enumerate(table.index):
            raw = table.iloc[i][cols[0]] if cols else ""
            if isinstance(raw, str) and raw.strip() == "":
                value = nominal[q]
            else:
                try:
                    value = float(raw)
                except (TypeError, ValueError):
                    raise PatientError(f"{source}: patient {patient!r}, column {cols[0]!r}: not a number: {raw!r}") from None
                if math.isnan(value):
                    value = nominal[q]
            where = f"{source}: patient {patient!r}, column {cols[0]!r}" if cols else f"organ default {q}"
            if not math.isfinite(value):
                raise PatientError(f"{where}: value must be finite, got {value}")
            if not decl.lower <= value <= decl.upper:
                raise PatientError(f"{where}: {value:g} {decl.unit} is outside [{decl.lower:g}, {decl.upper:g}]")
            theta[i, j] = value
    return theta


def resolve_patients(
    model: Model, patients: str | Sequence[str] | pd.DataFrame | Path
) -> tuple[list[str], np.ndarray, bool]:
    """Turn a patient specification into names and a parameter array.

    Arguments:
        model: the composed model whose parameters are needed.
        patients: a bundled name (``"adult#001"``), a list of names, a DataFrame,
            or the path of a CSV table (a ``str`` ending in ``.csv`` or a `Path`).

    Returns:
        ``(names, theta, single)``: ``theta`` has shape ``(n_patients, n_params)``
        in the order of ``model.param_names``; ``single`` is True when one name was
        given as a plain string (the result then has no ``patient`` dimension).
    """
    single = False
    if isinstance(patients, (pd.DataFrame, Path)) or (isinstance(patients, str) and patients.lower().endswith(".csv")):
        table = patient_table(patients)
        source = table.attrs.get("source", "<DataFrame>")
    else:
        if isinstance(patients, str):
            names, single = [patients], True
        else:
            names = list(patients)
        if not names:
            raise PatientError("no patients given")
        bundled = bundled_patients()
        unknown = [n for n in names if n not in bundled.index]
        if unknown:
            raise PatientError(f"unknown patient {unknown[0]!r}; bundled patients: {', '.join(bundled.index)} "
                               f"(or give a table with --patients FILE.csv)")
        if len(set(names)) != len(names):
            raise PatientError("a patient is named twice")
        table = bundled.loc[names].drop(columns=["source"])
        table = table.astype(object).where(table.notna(), "")
        source = "bundled patients"
    if len(table) == 0:
        raise PatientError(f"{source}: no patients in the table")
    theta = _params_array(model, table, source)
    return [str(n) for n in table.index], theta, single
