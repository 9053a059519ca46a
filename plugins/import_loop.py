"""Importers of data-platform and data-set exports: Nightscout JSON, Tidepool JSON, OhioT1DM XML.

Nightscout and Tidepool carry absolute (UTC) times; OhioT1DM carries the pump's wall clock.
Each record keeps its number in the file (the 1-based position in the JSON array, the XML
line) as its row. What has no installed kind is counted in a note. Details:
docs/importing.md.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path
from xml.parsers import expat

import pandas as pd

from physiotwin.importing import Importer, ImportedRows, RowCollector, import_error, parse_number, read_export_text
from physiotwin.plugins import hookimpl

__all__ = ["NIGHTSCOUT", "TIDEPOOL", "OHIOT1DM", "register_importers"]


def _json_list(path: Path) -> list:
    text = read_export_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise import_error(path, err.lineno, None, f"not JSON (a truncated export?): {err.msg}") from None
    if not isinstance(data, list):
        raise import_error(path, None, None, "expected a JSON array of records")
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise import_error(path, i, None, "a record that is not a JSON object")
    return data


def _number(path, row, key, item) -> float:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise import_error(path, row, key, f"not a number: {value!r}")
    return parse_number(path, row, key, str(value))


def _utc(path, row, key, raw) -> pd.Timestamp:
    try:
        moment = pd.Timestamp(raw)
    except (ValueError, TypeError):
        raise import_error(path, row, key, f"not an ISO-8601 time: {raw!r}") from None
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


# --------------------------------------------------------------------------- Nightscout
NS_BOLUS = {"Meal Bolus", "Correction Bolus", "Snack Bolus", "Bolus Wizard", "Combo Bolus", "Bolus"}
NS_CARBS = {"Meal Bolus", "Carb Correction", "Snack Bolus", "Bolus Wizard", "Combo Bolus", "Meal"}


def _nightscout_sniff(path: Path, head: str) -> bool:
    return head.lstrip().startswith("[") and ('"dateString"' in head or '"eventType"' in head)


def read_nightscout(path: Path) -> ImportedRows:
    path = Path(path)
    rows = RowCollector()
    for row, item in enumerate(_json_list(path), start=1):
        if "eventType" in item:
            _ns_treatment(path, row, item, rows)
        else:
            _ns_entry(path, row, item, rows)
    return rows.rows()


def _ns_entry(path, row, item, rows: RowCollector) -> None:
    kind = item.get("type")
    if kind not in ("sgv", "mbg"):
        rows.count(f"skipped {kind} entr(ies) (no installed kind)")
        return
    if "date" not in item:
        raise import_error(path, row, "date", "an entry without 'date' (milliseconds since 1970, UTC)")
    time = pd.Timestamp(_number(path, row, "date", item), unit="ms", tz="UTC")
    value = _number(path, row, kind, item)
    if kind == "sgv" and value < 39:  # Dexcom Share's error codes (sensor not ready, ???)
        rows.count("skipped sgv entr(ies) below 39 mg/dL (sensor error codes)")
        return
    rows.add(time, "cgm" if kind == "sgv" else "bg", value, "mg/dL", row)


def _ns_treatment(path, row, item, rows: RowCollector) -> None:
    event = item["eventType"]
    time = _utc(path, row, "created_at", item.get("created_at"))
    found = False
    if event in NS_CARBS and item.get("carbs"):
        rows.add(time, "carbs", _number(path, row, "carbs", item), "g", row)
        found = True
    if event in NS_BOLUS and item.get("insulin"):
        minutes = _number(path, row, "duration", item) if event == "Combo Bolus" and item.get("duration") else math.nan
        rows.add(time, "bolus", _number(path, row, "insulin", item), "U", row, minutes)
        found = True
    if event == "Temp Basal":
        key = "absolute" if item.get("absolute") is not None else "rate"
        rows.add(time, "basal", _number(path, row, key, item), "U/h", row)
        rows.count("temp basal(s) read as basal levels (the scheduled rate is in the profile, not in treatments)")
        found = True
    if not found:
        rows.count(f"skipped {event!r} treatment(s) (no installed kind)")


NIGHTSCOUT = Importer("nightscout", "Nightscout entries.json / treatments.json (UTC)", read_nightscout,
                      _nightscout_sniff, suffixes=(".json",))


# --------------------------------------------------------------------------- Tidepool
def _tidepool_sniff(path: Path, head: str) -> bool:
    return head.lstrip().startswith("[") and '"timezoneOffset"' in head and re.search(
        r'"type"\s*:\s*"(cbg|smbg|bolus|basal|food|wizard|upload)"', head) is not None


def read_tidepool(path: Path) -> ImportedRows:
    path = Path(path)
    rows = RowCollector()
    for row, item in enumerate(_json_list(path), start=1):
        kind = item.get("type")
        if kind not in ("cbg", "smbg", "bolus", "basal", "food", "wizard"):
            rows.count(f"skipped {kind} datum/data (no installed kind)")
            continue
        time = _utc(path, row, "time", item.get("time"))
        _tidepool_datum(path, row, kind, time, item, rows)
    return rows.rows()


def _tidepool_datum(path, row, kind, time, item, rows: RowCollector) -> None:
    if kind in ("cbg", "smbg"):
        unit = {"mmol/L": "mmol/L", "mmol/l": "mmol/L", "mg/dL": "mg/dL", "mg/dl": "mg/dL"}.get(item.get("units"))
        if unit is None:
            raise import_error(path, row, "units", f"unknown glucose unit {item.get('units')!r} (mmol/L or mg/dL)")
        rows.add(time, "cgm" if kind == "cbg" else "bg", _number(path, row, "value", item), unit, row)
    elif kind == "bolus":
        if item.get("normal"):
            rows.add(time, "bolus", _number(path, row, "normal", item), "U", row)
        if item.get("extended"):
            minutes = _number(path, row, "duration", item) / 60000.0
            rows.add(time, "bolus", _number(path, row, "extended", item), "U", row, minutes)
    elif kind == "basal":
        rate = 0.0 if item.get("deliveryType") == "suspend" else _number(path, row, "rate", item)
        rows.add(time, "basal", rate, "U/h", row)
    else:
        nutrition = item.get("nutrition", {}).get("carbohydrate", {}) if kind == "food" else item
        key = "net" if kind == "food" else "carbInput"
        if nutrition.get(key):
            rows.add(time, "carbs", _number(path, row, key, nutrition), "g", row)


TIDEPOOL = Importer("tidepool", "Tidepool JSON export (cbg, smbg, bolus, basal, food, wizard; UTC)", read_tidepool,
                    _tidepool_sniff, suffixes=(".json",))


# --------------------------------------------------------------------------- OhioT1DM
OHIO_SIMPLE = {"glucose_level": ("cgm", "mg/dL"), "finger_stick": ("bg", "mg/dL"), "basal": ("basal", "U/h"),
               "basis_heart_rate": ("heart_rate", "1/min")}


def _ohio_sniff(path: Path, head: str) -> bool:
    return "<patient" in head and "<glucose_level" in head


def _xml_events(path: Path) -> list[tuple[int, str, dict]]:
    """(line, parent element, attributes) of every ``<event>`` in document order."""
    events, stack = [], []
    parser = expat.ParserCreate()

    def start(name, attrs):
        if name == "event":
            events.append((parser.CurrentLineNumber, stack[-1] if stack else "", attrs))
        stack.append(name)

    parser.StartElementHandler = start
    parser.EndElementHandler = lambda name: stack.pop()
    try:
        parser.Parse(read_export_text(path), True)
    except expat.ExpatError as err:
        raise import_error(path, err.lineno, None, f"not well-formed XML (a truncated export?): "
                                                   f"{expat.ErrorString(err.code)}") from None
    return events


def _ohio_time(path, line, key, attrs) -> datetime:
    raw = attrs.get(key, "")
    try:
        return datetime.strptime(raw, "%d-%m-%Y %H:%M:%S")
    except ValueError:
        raise import_error(path, line, key, f"not a time DD-MM-YYYY HH:MM:SS: {raw!r}") from None


def read_ohiot1dm(path: Path) -> ImportedRows:
    path = Path(path)
    rows = RowCollector()
    temps = []
    for line, parent, attrs in _xml_events(path):
        if parent in OHIO_SIMPLE:
            kind, unit = OHIO_SIMPLE[parent]
            rows.add(_ohio_time(path, line, "ts", attrs), kind, parse_number(path, line, "value", attrs.get("value", "")),
                     unit, line)
        elif parent == "temp_basal":
            temps.append((line, attrs))
        elif parent == "bolus":
            _ohio_bolus(path, line, attrs, rows)
        elif parent == "meal":
            rows.add(_ohio_time(path, line, "ts", attrs), "carbs", parse_number(path, line, "carbs", attrs.get("carbs", "")),
                     "g", line)
        elif parent == "exercise":
            _ohio_exercise(path, line, attrs, rows)
        else:
            rows.count(f"skipped {parent} event(s) (no installed kind)")
    _ohio_temp_basals(path, temps, rows)
    return rows.rows(notes=("meal carbs read from <meal>; bolus bwz_carb_input not read (it repeats them)",))


def _ohio_bolus(path, line, attrs, rows: RowCollector) -> None:
    begin, end = _ohio_time(path, line, "ts_begin", attrs), _ohio_time(path, line, "ts_end", attrs)
    minutes = (end - begin).total_seconds() / 60.0
    rows.add(begin, "bolus", parse_number(path, line, "dose", attrs.get("dose", "")), "U", line,
             minutes if minutes > 0 else math.nan)


def _ohio_exercise(path, line, attrs, rows: RowCollector) -> None:
    minutes = parse_number(path, line, "duration", attrs.get("duration", ""))
    intensity = parse_number(path, line, "intensity", attrs.get("intensity", ""))
    if minutes <= 0:
        rows.count("skipped exercise event(s) without a duration")
        return
    rows.add(_ohio_time(path, line, "ts", attrs), "exercise", min(intensity / 10.0, 1.0), "1", line, minutes)


def _ohio_temp_basals(path, temps, rows: RowCollector) -> None:
    """A temp basal sets the rate from ts_begin; at ts_end the scheduled rate in force resumes."""
    scheduled = sorted((t, v) for t, k, v, *_ in rows.events if k == "basal")
    for line, attrs in temps:
        begin, end = _ohio_time(path, line, "ts_begin", attrs), _ohio_time(path, line, "ts_end", attrs)
        rows.add(begin, "basal", parse_number(path, line, "value", attrs.get("value", "")), "U/h", line)
        before = [v for t, v in scheduled if t <= end]
        if before and end > begin:
            rows.add(end + timedelta(seconds=0), "basal", before[-1], "U/h", line)


OHIOT1DM = Importer("ohiot1dm", "OhioT1DM data set XML (one patient per file; pump wall clock)", read_ohiot1dm,
                    _ohio_sniff, suffixes=(".xml",))


@hookimpl
def register_importers(register):
    for importer in (NIGHTSCOUT, TIDEPOOL, OHIOT1DM):
        register(importer)
