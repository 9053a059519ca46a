"""Importers of CGM-system CSV exports: Dexcom Clarity, Abbott LibreView, Medtronic CareLink.

Each maps the vendor's columns to timeline kinds (``cgm``, ``bg``, ``carbs``, ``bolus``,
``basal``, ``exercise``), keeps the export row of every event, sets the "High"/"Low"
sentinels to the sensor's reporting limits (counted in a note) and counts, never drops
silently, what has no installed kind (long-acting insulin, notes, alarms, ...). Times are
the device's wall clock (naive); ``physiotwin import --tz ZONE`` localises them.
Column by column: docs/importing.md.
"""

from __future__ import annotations

import math
from pathlib import Path

from physiotwin.importing import (Importer, ImportedRows, RowCollector, csv_sections, import_error, parse_clock,
                                  parse_number, read_export_text)
from physiotwin.plugins import hookimpl

__all__ = ["DEXCOM", "LIBRE", "CARELINK", "MMOL_PER_MGDL", "register_importers"]

MMOL_PER_MGDL = 1 / 18.01559  # glucose, mmol/L per mg/dL (molar mass 180.156 g/mol)
DEXCOM_LIMITS = (40.0, 400.0)  # mg/dL: the readings Dexcom G6/G7 report as "Low"/"High"
LIBRE_LIMITS = (40.0, 500.0)  # mg/dL: "LO"/"HI" of FreeStyle Libre 2/3
EXERCISE_INTENSITY = {"light": 0.3, "medium": 0.5, "heavy": 0.7}  # fraction of heart-rate reserve (assumed)


def _hms_minutes(path, row, column, raw: str) -> float:
    """``h:mm:ss`` (or ``hh:mm:ss``) as minutes."""
    parts = raw.strip().split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise import_error(path, row, column, f"not a duration h:mm:ss: {raw!r}")
    h, m, s = map(int, parts)
    return h * 60 + m + s / 60


def _glucose(path, row, column, raw: str, unit: str, limits, sentinels: dict, rows: RowCollector) -> float:
    """A reading in ``unit`` (mg/dL or mmol/L); sentinels set to the limits; out-of-unit values refused."""
    word = raw.strip().lower()
    if word in sentinels:
        rows.count(f"{raw.strip()!r} reading(s) set to the sensor's {sentinels[word]} limit")
        mgdl = limits[0] if sentinels[word] == "lower" else limits[1]
        return mgdl if unit == "mg/dL" else round(mgdl * MMOL_PER_MGDL, 1)
    value = parse_number(path, row, column, raw)
    low, high = (39.0, 600.0) if unit == "mg/dL" else (2.1, 33.4)
    if not low <= value <= high:
        raise import_error(path, row, column, f"{value:g} is not a reading in {unit} (expected {low:g}-{high:g}): "
                                              f"mixed units in one column, or a corrupt export")
    return value


def _known_columns(path, line, header, known: set[str]) -> dict[str, int]:
    for name in header:
        if name not in known:
            raise import_error(path, line, name, "unknown column for this format (a changed export layout?); "
                                                 "see docs/importing.md for the columns read")
    return {name: i for i, name in enumerate(header)}


# --------------------------------------------------------------------------- Dexcom Clarity
DEXCOM_COLUMNS = {
    "Index", "Timestamp (YYYY-MM-DDThh:mm:ss)", "Event Type", "Event Subtype", "Patient Info", "Device Info",
    "Source Device ID", "Glucose Value (mg/dL)", "Glucose Value (mmol/L)", "Insulin Value (u)", "Carb Value (grams)",
    "Duration (hh:mm:ss)", "Glucose Rate of Change (mg/dL/min)", "Glucose Rate of Change (mmol/L/min)",
    "Transmitter Time (Long Integer)", "Transmitter ID"}
DEXCOM_INFO = {"FirstName", "LastName", "Device", "Alert", "DateOfBirth"}
DEXCOM_TIME = "Timestamp (YYYY-MM-DDThh:mm:ss)"


def _dexcom_sniff(path: Path, head: str) -> bool:
    return DEXCOM_TIME in head and "Event Type" in head


def read_dexcom(path: Path) -> ImportedRows:
    path = Path(path)
    text = read_export_text(path)
    rows = RowCollector()
    for line, header, data in csv_sections(path, text, lambda cells: DEXCOM_TIME in cells):
        col = _known_columns(path, line, header, DEXCOM_COLUMNS)
        unit = "mmol/L" if "Glucose Value (mmol/L)" in col else "mg/dL"
        for number, cells in data:
            _dexcom_row(path, number, cells, col, unit, rows)
    return rows.rows()


def _dexcom_row(path, number, cells, col, unit, rows: RowCollector) -> None:
    def cell(name):
        return cells[col[name]] if name in col else ""

    event, subtype = cell("Event Type"), cell("Event Subtype")
    if not cell(DEXCOM_TIME):
        if event in DEXCOM_INFO:
            return  # the preamble: patient, device and alert settings
        raise import_error(path, number, DEXCOM_TIME, f"a {event or 'row'} event without a time")
    time = parse_clock(path, number, DEXCOM_TIME, cell(DEXCOM_TIME), ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"))
    value_column = f"Glucose Value ({unit})"
    if event in ("EGV", "Calibration"):
        raw = cell(value_column) or subtype
        value = _glucose(path, number, value_column, raw, unit, DEXCOM_LIMITS, {"high": "upper", "low": "lower"}, rows)
        rows.add(time, "cgm" if event == "EGV" else "bg", value, unit, number)
    elif event == "Carbs":
        rows.add(time, "carbs", parse_number(path, number, "Carb Value (grams)", cell("Carb Value (grams)")), "g", number)
    elif event == "Insulin" and subtype == "Fast-Acting":
        rows.add(time, "bolus", parse_number(path, number, "Insulin Value (u)", cell("Insulin Value (u)")), "U", number)
    elif event == "Exercise" and subtype.lower() in EXERCISE_INTENSITY and cell("Duration (hh:mm:ss)"):
        minutes = _hms_minutes(path, number, "Duration (hh:mm:ss)", cell("Duration (hh:mm:ss)"))
        rows.add(time, "exercise", EXERCISE_INTENSITY[subtype.lower()], "1", number, minutes)
    else:
        rows.count(f"skipped {event} {subtype}".strip() + " row(s) (no installed kind)")


DEXCOM = Importer("dexcom", "Dexcom Clarity CSV export (EGV, calibrations, carbs, insulin, exercise)",
                  read_dexcom, _dexcom_sniff)


# --------------------------------------------------------------------------- LibreView
LIBRE_COLUMNS = {
    "Device", "Serial Number", "Device Timestamp", "Record Type", "Non-numeric Rapid-Acting Insulin",
    "Rapid-Acting Insulin (units)", "Non-numeric Food", "Carbohydrates (grams)", "Carbohydrates (servings)",
    "Non-numeric Long-Acting Insulin", "Long-Acting Insulin Value (units)", "Long-Acting Insulin (units)", "Notes",
    "Ketone mmol/L", "Meal Insulin (units)", "Correction Insulin (units)", "User Change Insulin (units)"}
LIBRE_GLUCOSE = ("Historic Glucose", "Scan Glucose", "Strip Glucose")
LIBRE_SKIPPED = {3: "skipped record type 3 row(s) (undocumented)", 6: "skipped note row(s) (record type 6)"}


def _libre_sniff(path: Path, head: str) -> bool:
    return "Device Timestamp" in head and "Record Type" in head and "Historic Glucose" in head


def read_libre(path: Path) -> ImportedRows:
    path = Path(path)
    rows = RowCollector()
    sections = csv_sections(path, read_export_text(path), lambda c: "Device Timestamp" in c and "Record Type" in c)
    for line, header, data in sections:
        known = LIBRE_COLUMNS | {f"{g} {u}" for g in LIBRE_GLUCOSE for u in ("mg/dL", "mmol/L")}
        col = _known_columns(path, line, header, known)
        units = {g: next((u for u in ("mg/dL", "mmol/L") if f"{g} {u}" in col), None) for g in LIBRE_GLUCOSE}
        for number, cells in data:
            _libre_row(path, number, cells, col, units, rows)
    return rows.rows()


def _libre_row(path, number, cells, col, units, rows: RowCollector) -> None:
    def cell(name):
        return cells[col[name]] if name in col else ""

    time = parse_clock(path, number, "Device Timestamp", cell("Device Timestamp"), ("%d-%m-%Y %H:%M", "%d-%m-%Y %H:%M:%S"))
    kind = parse_number(path, number, "Record Type", cell("Record Type"))
    if kind in (0, 1, 2):
        name = LIBRE_GLUCOSE[int(kind)]
        unit = units[name]
        if unit is None:
            raise import_error(path, number, "Record Type", f"record type {kind:g} but no {name} column")
        column = f"{name} {unit}"
        if not cell(column):
            rows.count(f"skipped record type {kind:g} row(s) with an empty {name} cell")
            return
        value = _glucose(path, number, column, cell(column), unit, LIBRE_LIMITS, {"hi": "upper", "lo": "lower"}, rows)
        rows.add(time, "bg" if kind == 2 else "cgm", value, unit, number)
    elif kind == 4:
        _libre_insulin(path, number, time, cell, rows)
    elif kind == 5:
        if cell("Carbohydrates (grams)"):
            grams = parse_number(path, number, "Carbohydrates (grams)", cell("Carbohydrates (grams)"))
            rows.add(time, "carbs", grams, "g", number)
        else:
            rows.count("skipped food row(s) without grams (servings or non-numeric food)")
    else:
        rows.count(LIBRE_SKIPPED.get(int(kind), f"skipped record type {kind:g} row(s) (no installed kind)"))


def _libre_insulin(path, number, time, cell, rows: RowCollector) -> None:
    if cell("Rapid-Acting Insulin (units)"):
        units = parse_number(path, number, "Rapid-Acting Insulin (units)", cell("Rapid-Acting Insulin (units)"))
        rows.add(time, "bolus", units, "U", number)
    if cell("Long-Acting Insulin Value (units)") or cell("Long-Acting Insulin (units)"):
        rows.count("skipped long-acting insulin dose(s) (no installed kind; not a bolus)")
    if cell("Non-numeric Rapid-Acting Insulin") or cell("Non-numeric Long-Acting Insulin"):
        rows.count("skipped non-numeric insulin entr(ies)")


LIBRE = Importer("libre", "Abbott LibreView CSV export (historic, scan and strip glucose, insulin, food)",
                 read_libre, _libre_sniff)


# --------------------------------------------------------------------------- Medtronic CareLink
CARELINK_COLUMNS = {
    "Index", "Date", "Time", "New Device Time", "BG Source", "BG Reading (mg/dL)", "Linked BG Meter ID",
    "Basal Rate (U/h)", "Temp Basal Amount", "Temp Basal Type", "Temp Basal Duration (h:mm:ss)", "Bolus Type",
    "Bolus Volume Selected (U)", "Bolus Volume Delivered (U)", "Bolus Duration (h:mm:ss)", "Prime Type",
    "Prime Volume Delivered (U)", "Estimated Reservoir Volume after Fill (U)", "Alarm", "Alert", "User Cleared Alerts",
    "Suspend", "Rewind", "BWZ Estimate (U)", "BWZ Target High BG (mg/dL)", "BWZ Target Low BG (mg/dL)",
    "BWZ Carb Ratio (g/U)", "BWZ Insulin Sensitivity (mg/dL/U)", "BWZ Carb Input (grams)", "BWZ BG Input (mg/dL)",
    "BWZ Correction Estimate (U)", "BWZ Food Estimate (U)", "BWZ Active Insulin (U)", "BWZ Status",
    "Sensor Calibration BG (mg/dL)", "Sensor Glucose (mg/dL)", "ISIG Value", "Event Marker", "Bolus Number",
    "Bolus Cancellation Reason", "BWZ Unabsorbed Insulin Total (U)", "Final Bolus Estimate", "Scroll Step Size",
    "Insulin Action Curve Time", "Sensor Calibration Rejected Reason", "Preset Bolus", "Bolus Source",
    "BLE Network Device", "Device Update Event", "Network Device Associated Reason",
    "Network Device Disassociated Reason", "Network Device Disconnected Reason", "Sensor Exception",
    "Preset Temp Basal Name", "Sensor State"}
CARELINK_OTHER = ("Prime Type", "Alarm", "Alert", "Suspend", "Rewind", "Event Marker", "Temp Basal Amount",
                  "Sensor Exception")


def _carelink_sniff(path: Path, head: str) -> bool:
    return "Sensor Glucose (mg/dL)" in head and "BWZ Carb Input (grams)" in head


def _carelink_dialect(text: str) -> tuple[str, str]:
    """(delimiter, decimal): US exports use ``,`` and ``.``, European ones ``;`` and ``,``."""
    header = next((line for line in text.splitlines() if line.startswith("Index")), "")
    return (";", ",") if header.count(";") > header.count(",") else (",", ".")


def read_carelink(path: Path) -> ImportedRows:
    path = Path(path)
    text = read_export_text(path)
    delimiter, decimal = _carelink_dialect(text)
    rows = RowCollector()
    sections = csv_sections(path, text, lambda c: c[:3] == ["Index", "Date", "Time"], delimiter,
                            is_skipped=lambda c: c[0].startswith("-------"))
    for section, (line, header, data) in enumerate(sections):
        col = _known_columns(path, line, header, CARELINK_COLUMNS)
        for number, cells in data:
            _carelink_row(path, number, cells, col, decimal, section, rows)
    return rows.rows(newest_first=True)


def _carelink_row(path, number, cells, col, decimal, section, rows: RowCollector) -> None:
    def cell(name):
        return cells[col[name]] if name in col else ""

    def number_of(name):
        return parse_number(path, number, name, cell(name), decimal)

    time = parse_clock(path, number, "Date", f"{cell('Date')} {cell('Time')}",
                       ("%Y/%m/%d %H:%M:%S", "%m/%d/%y %H:%M:%S", "%d/%m/%Y %H:%M:%S"))
    found = False
    for column, kind, unit in (("Sensor Glucose (mg/dL)", "cgm", "mg/dL"), ("BG Reading (mg/dL)", "bg", "mg/dL"),
                               ("Basal Rate (U/h)", "basal", "U/h"), ("BWZ Carb Input (grams)", "carbs", "g")):
        if cell(column):
            value = number_of(column)
            if kind in ("cgm", "bg"):
                value = _glucose(path, number, column, cell(column), unit, DEXCOM_LIMITS, {}, rows)
            if kind != "carbs" or value > 0:
                rows.add(time, kind, value, unit, number, stream=section)
            found = True
    if cell("Bolus Type"):
        found = True
        _carelink_bolus(path, number, time, cell, number_of, section, rows)
    if not found:
        other = next((c for c in CARELINK_OTHER if cell(c)), None)
        if other is not None:
            rows.count(f"skipped {other} row(s) (no installed kind)")


def _carelink_bolus(path, number, time, cell, number_of, section, rows: RowCollector) -> None:
    if not cell("Bolus Volume Delivered (U)"):
        rows.count("skipped programmed-only bolus row(s) (the delivered amount is logged in its own row)")
        return
    units = number_of("Bolus Volume Delivered (U)")
    square = "square" in cell("Bolus Type").lower()
    minutes = _hms_minutes(path, number, "Bolus Duration (h:mm:ss)", cell("Bolus Duration (h:mm:ss)")) \
        if square and cell("Bolus Duration (h:mm:ss)") else math.nan
    if units > 0:
        rows.add(time, "bolus", units, "U", number, minutes, stream=section)


CARELINK = Importer("carelink", "Medtronic CareLink CSV export (pump and sensor sections, newest first)",
                    read_carelink, _carelink_sniff)


@hookimpl
def register_importers(register):
    for importer in (DEXCOM, LIBRE, CARELINK):
        register(importer)
