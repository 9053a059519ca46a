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
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .composer import Model
from .errors import PatientError

__all__ = ["PatientError", "bundled_patients", "patient_table", "resolve_patients", "table_params"]


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
    from .registry import patient_tables

    frames = []
    for table in patient_tables().values():
        text = resources.files(table.package).joinpath(table.resource).read_text()
        frame = _read_commented_csv(text, table.resource)
        frame["source"] = table.resource
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["source"], index=pd.Index([], name="patient"))
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
        if col == "timeline":
            raise PatientError(f"{source}: a 'timeline' column (one timeline per patient) is read by the cohort "
                               f"path: physiotwin.cohort.read_cohort, or `physiotwin simulate --solver fixed`")
        if col in model.param_names:
            target = col
        elif col in by_bare:
            if len(by_bare[col]) > 1:
                raise PatientError(f"{source}: column {col!r} is ambiguous in this composition; "
                                   f"use one of {', '.join(by_bare[col])}")
            target = by_bare[col][0]
        elif col not in known_anywhere:
            raise PatientError(f"{source}: column {col!r} is not a parameter of any installed organ "
                               f"(columns are 'organ.param', or a bare name that one organ of the composition has)")
        else:
            continue
        if target in mapping.values():
            other = next(c for c, t in mapping.items() if t == target)
            raise PatientError(f"{source}: columns {other!r} and {col!r} both set {target}")
        mapping[col] = target
    return mapping


def _column_values(table: pd.DataFrame, col: str, default: float, source: str) -> np.ndarray:
    """One column as floats (empty cells and NaN: ``default``), read as a whole."""
    raw = table[col]
    values = pd.to_numeric(raw.where(~raw.astype(str).str.strip().eq(""), np.nan), errors="coerce").to_numpy(float)
    bad = np.isnan(values) & ~raw.isna().to_numpy() & ~raw.astype(str).str.strip().str.lower().isin(["", "nan"])
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise PatientError(f"{source}: patient {table.index[k]!r}, column {col!r}: not a number: {raw.iloc[k]!r}")
    return np.where(np.isnan(values), default, values)


def table_params(model: Model, table: pd.DataFrame, source: str) -> np.ndarray:
    """``[patient, parameter]`` (order ``model.param_names``) from a table read by `patient_table`,
    column by column; missing columns and empty cells take the organ's nominal value."""
    nominal = model.nominal_params()
    mapping = _column_map(model, list(table.columns), source)
    column_of = {target: c for c, target in mapping.items()}
    theta = np.empty((len(table), len(model.param_names)))
    for j, q in enumerate(model.param_names):
        decl = model.declaration(q)
        col = column_of.get(q)
        values = np.full(len(table), nominal[q]) if col is None else _column_values(table, col, nominal[q], source)
        bad = ~np.isfinite(values) | (values < decl.lower) | (values > decl.upper)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            where = f"{source}: patient {table.index[k]!r}, column {col!r}" if col else f"organ default {q}"
            if not np.isfinite(values[k]):
                raise PatientError(f"{where}: value must be finite, got {values[k]}")
            raise PatientError(f"{where}: {values[k]:g} {decl.unit} is outside [{decl.lower:g}, {decl.upper:g}]")
        theta[:, j] = values
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
    theta = table_params(model, table, source)
    return [str(n) for n in table.index], theta, single
