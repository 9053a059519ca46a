"""Importer of FHIR R4 Bundles (JSON) of Observations and MedicationAdministrations.

Parsed and validated with ``fhir.resources`` (its ``R4B`` models, which read R4 JSON of
these resources). Observations are recognised by their LOINC code; insulin
administrations by the medication's name. The row of an event is the 1-based index of
its entry in the Bundle. Details: docs/importing.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from physiotwin.importing import Importer, ImportedRows, RowCollector, import_error, read_export_text
from physiotwin.plugins import hookimpl

__all__ = ["FHIR", "LOINC", "register_importers"]

LOINC_SYSTEM = "http://loinc.org"
LOINC = {  # code: (kind, meaning)
    "2339-0": ("bg", "Glucose [Mass/volume] in Blood"),
    "15074-8": ("bg", "Glucose [Moles/volume] in Blood"),
    "2345-7": ("bg", "Glucose [Mass/volume] in Serum or Plasma"),
    "41653-7": ("bg", "Glucose [Mass/volume] in Capillary blood by Glucometer"),
    "14745-4": ("cgm", "Glucose [Moles/volume] in Body fluid (CGM)"),
    "99504-3": ("cgm", "Glucose [Mass/volume] in Interstitial fluid"),
    "8478-0": ("map", "Mean blood pressure"),
    "85354-9": ("map", "Blood pressure panel (MAP = DBP + (SBP - DBP) / 3)"),
    "8867-4": ("heart_rate", "Heart rate"),
    "2160-0": ("creatinine", "Creatinine [Mass/volume] in Serum or Plasma"),
    "14682-9": ("creatinine", "Creatinine [Moles/volume] in Serum or Plasma"),
    # meals, as diabetes apps and personal-health records write them (e.g. Roche RDC, Finnish PHR profiles)
    "9059-7": ("carbs", "Carbohydrate intake Estimated"),
    "9060-5": ("carbs", "Carbohydrate intake Measured"),
}
SYSTOLIC, DIASTOLIC = "8480-6", "8462-4"
UCUM_UNITS = {"mm[Hg]": "mmHg", "/min": "1/min", "{beats}/min": "1/min", "umol/L": "umol/L", "[IU]": "U", "IU": "U"}
RAPID_INSULIN = ("lispro", "aspart", "glulisine", "regular", "rapid", "fast", "humalog", "novolog", "novorapid",
                 "fiasp", "apidra", "actrapid")
LONG_INSULIN = ("glargine", "detemir", "degludec", "nph", "isophane", "long", "lantus", "levemir", "tresiba",
                "toujeo", "basaglar")


def _fhir_sniff(path: Path, head: str) -> bool:
    return '"resourceType"' in head and '"Bundle"' in head


def _bundle(path: Path):
    try:
        from fhir.resources.R4B.bundle import Bundle
    except ImportError:  # pragma: no cover - a dependency of physiotwin
        raise import_error(path, None, None, "reading FHIR needs the package fhir.resources (pip install "
                                             "'fhir.resources>=8,<9')") from None
    text = read_export_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise import_error(path, err.lineno, None, f"not JSON (a truncated export?): {err.msg}") from None
    try:
        return Bundle.model_validate(data)
    except Exception as err:  # noqa: BLE001 - pydantic's ValidationError, or fhir_core's own
        first = getattr(err, "errors", lambda: [{}])()[0] if hasattr(err, "errors") else {}
        loc = [str(x) for x in first.get("loc", ())]
        row = int(loc[1]) + 1 if len(loc) > 1 and loc[0] == "entry" and loc[1].isdigit() else None
        raise import_error(path, row, ".".join(loc[2:]) or None,
                           f"not a valid FHIR R4 Bundle: {first.get('msg', err)}") from None


def read_fhir(path: Path) -> ImportedRows:
    path = Path(path)
    rows = RowCollector()
    notes = []
    for row, entry in enumerate(_bundle(path).entry or [], start=1):
        resource = entry.resource
        kind = type(resource).__name__
        if kind == "Observation":
            if _observation(path, row, resource, rows) == "85354-9":
                notes = ["mean arterial pressure computed from blood-pressure panels as DBP + (SBP - DBP) / 3"]
        elif kind == "MedicationAdministration":
            _administration(path, row, resource, rows)
        else:
            rows.count(f"skipped {kind} resource(s) (no installed kind)")
    return rows.rows(notes=notes)


def _loinc(concept) -> str | None:
    for coding in (concept.coding or []) if concept is not None else []:
        if coding.system == LOINC_SYSTEM and coding.code in LOINC | {SYSTOLIC: 0, DIASTOLIC: 0}:
            return coding.code
    return None


def _when(path, row, resource, field_name):
    moment = getattr(resource, f"{field_name}DateTime", None)
    period = getattr(resource, f"{field_name}Period", None)
    moment = moment or (period.start if period is not None else None)
    if moment is None:
        raise import_error(path, row, field_name, "no time (effectiveDateTime or effectivePeriod.start)")
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise import_error(path, row, field_name, f"a time without a UTC offset: {moment}")
    return stamp.tz_convert("UTC")


def _quantity(path, row, quantity, column: str) -> tuple[float, str]:
    if quantity is None or quantity.value is None:
        raise import_error(path, row, column, "no valueQuantity")
    unit = quantity.code or quantity.unit or ""
    return float(quantity.value), UCUM_UNITS.get(unit, unit)


def _observation(path, row, obs, rows: RowCollector) -> str | None:
    code = _loinc(obs.code)
    if code is None or code in (SYSTOLIC, DIASTOLIC):
        rows.count("skipped Observation(s) with a code of no installed kind")
        return None
    time = _when(path, row, obs, "effective")
    kind = LOINC[code][0]
    if code == "85354-9":
        parts = {_loinc(c.code): c.valueQuantity for c in obs.component or []}
        if SYSTOLIC not in parts or DIASTOLIC not in parts:
            raise import_error(path, row, "component", "a blood-pressure panel without systolic and diastolic values")
        (sbp, unit), (dbp, _) = (_quantity(path, row, parts[c], "component") for c in (SYSTOLIC, DIASTOLIC))
        rows.add(time, kind, dbp + (sbp - dbp) / 3.0, unit, row)
        return code
    value, unit = _quantity(path, row, obs.valueQuantity, "valueQuantity")
    rows.add(time, kind, value, unit, row)
    return code


def _administration(path, row, admin, rows: RowCollector) -> None:
    concept = admin.medicationCodeableConcept
    names = " ".join([concept.text or ""] + [c.display or "" for c in concept.coding or []]).lower() \
        if concept is not None else ""
    if "insulin" not in names:
        rows.count("skipped MedicationAdministration(s) of other medications")
    elif any(w in names for w in LONG_INSULIN):
        rows.count("skipped long-acting insulin administration(s) (no installed kind; not a bolus)")
    elif not any(w in names for w in RAPID_INSULIN):
        rows.count("skipped insulin administration(s) of unknown action (name no rapid- or long-acting insulin)")
    else:
        dose = admin.dosage.dose if admin.dosage is not None else None
        value, unit = _quantity(path, row, dose, "dosage.dose")
        rows.add(_when(path, row, admin, "effective"), "bolus", value, unit, row)


FHIR = Importer("fhir", "FHIR R4 Bundle (JSON) of Observations (LOINC) and MedicationAdministrations",
                read_fhir, _fhir_sniff, suffixes=(".json",))


@hookimpl
def register_importers(register):
    register(FHIR)
