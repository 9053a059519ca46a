"""Write the sample device exports of tests/data/imports from one simulated patient.

    python tests/data/imports/make_samples.py

The patient is the 2-day simglucose record tests/data/record_small.csv (adult#001, seed 3:
3 meals and a snack a day with boluses, one basal rate). Its noise-free sensor glucose
(``cgm_true``) plus a little noise is written in each vendor's published layout, with the
quirks real exports have (docs/importing.md lists them per file):

* dexcom.csv      Clarity CSV: preamble rows, EGV/Carbs/Insulin/Exercise/Health mixed, 3 duplicated
                  rows, "High"/"Low" (a compression low at night and a sensor error above range; the
                  rest is the simulated glucose), a 2-h sensor warm-up gap, a long-acting dose; the clock is
                  Europe/Berlin wall time over the fall-back night of 2026-10-25 (02:00-02:59 twice).
* libre.csv       LibreView CSV, mg/dL: title line, historic (15 min), scans, strips, insulin,
                  food, notes, "HI"/"LO", duplicated rows, a gap.
* libre_mmol.csv  LibreView CSV in mmol/L (decimal values).
* carelink.csv    CareLink CSV: preamble, a pump and a sensor section each with its header,
                  newest first, bolus-wizard carbs, a square bolus, programmed-only bolus rows,
                  prime/rewind/alarm rows, a sensor warm-up gap.
* nightscout_entries.json / nightscout_treatments.json   Nightscout API output (newest first,
                  UTC): sgv and mbg entries; meal/correction boluses, carb corrections, temp basals,
                  a site change, a note.
* tidepool.json   Tidepool export: cbg/smbg in mmol/L, normal and dual-wave boluses, scheduled/temp
                  basals, food, upload and settings data (skipped).
* ohiot1dm.xml    OhioT1DM layout: glucose_level, finger_stick, basal, temp_basal, bolus, meal,
                  exercise, basis_heart_rate, sleep (skipped).
* clarity_cgm.csv + carelink_pump.csv   the "Dexcom + pump" pair of notebooks/07-real-data.ipynb:
                  the sensor alone (Dexcom G7, a 30-min signal loss) and the pump alone (CareLink,
                  pump section only), over the record's own two days, device clocks in local time.
* fhir_bundle.json  FHIR R4 Bundle: interstitial glucose (LOINC 99504-3, 15 min), capillary glucose
                  (41653-7), blood-pressure panels (85354-9), heart rate (8867-4), creatinine
                  (2160-0), meals (carbohydrate intake estimated, 9059-7), insulin lispro and glargine MedicationAdministrations, a Patient.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RECORD = HERE.parent / "record_small.csv"


def patient():
    """(minutes, glucose mg/dL, meals [(minute, g)], boluses [(minute, U)], basal U/h)."""
    rec = pd.read_csv(RECORD, comment="#")
    start = pd.Timestamp("2026-01-05T00:00:00")
    minutes = lambda k: ((pd.to_datetime(rec[rec.kind == k].time) - start).dt.total_seconds() / 60).to_numpy()
    true = rec[rec.kind == "cgm_true"].value.to_numpy()
    noise = np.random.default_rng(0).normal(0.0, 3.0, len(true))
    meals = list(zip(minutes("carbs"), rec[rec.kind == "carbs"].value))
    boluses = list(zip(minutes("bolus"), rec[rec.kind == "bolus"].value.round(2)))
    return minutes("cgm_true"), true + noise, meals, boluses, float(rec[rec.kind == "basal"].value.iloc[0])


def csv_text(rows, delimiter=",") -> str:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return out.getvalue()


# --------------------------------------------------------------------------- Dexcom
DEXCOM_HEADER = ["Index", "Timestamp (YYYY-MM-DDThh:mm:ss)", "Event Type", "Event Subtype", "Patient Info",
                 "Device Info", "Source Device ID", "Glucose Value (mg/dL)", "Insulin Value (u)", "Carb Value (grams)",
                 "Duration (hh:mm:ss)", "Glucose Rate of Change (mg/dL/min)", "Transmitter Time (Long Integer)",
                 "Transmitter ID"]


def with_sentinels(minutes, glucose, low: float, high: float):
    """The glucose as simulated, but for a sensor's out-of-range reports: a compression "low"
    at 03:00-03:15 on the first night (the sensor under the sleeping patient reads below its
    range) and two readings above its range at 17:30 on the second day (a sensor error), so
    the sentinels are exercised while the record stays the patient's physiology."""
    out = np.array(glucose, dtype=float)
    out[(minutes >= 180) & (minutes <= 195)] = low - 5.0
    out[(minutes >= 1440 + 1050) & (minutes <= 1440 + 1055)] = high + 10.0
    return out


def dexcom(p) -> str:
    minutes, glucose, meals, boluses, _ = p
    glucose = with_sentinels(minutes, glucose, 40.0, 400.0)
    utc0 = datetime(2026, 10, 23, 22, 0, tzinfo=timezone.utc)  # 00:00 CEST, Saturday 24 October
    berlin = lambda m: pd.Timestamp(utc0 + timedelta(minutes=float(m))).tz_convert("Europe/Berlin")
    wall = lambda m: berlin(m).tz_localize(None).strftime("%Y-%m-%dT%H:%M:%S")
    events = []
    for m, g in zip(minutes, glucose):
        if 1800 <= m < 1920:  # sensor warm-up after a sensor change: no readings for 2 h
            continue
        value = "High" if g > 400 else "Low" if g < 40 else str(int(round(g)))
        sub = value if value in ("High", "Low") else ""
        events.append((m, ["EGV", sub, "", "", "iOS G6", value, "", "", "", "", str(int(m * 60)), "8AB1CD"]))
    events += [(m + 0.5, ["Carbs", "", "", "", "", "", "", str(int(g)), "", "", "", ""]) for m, g in meals]
    events += [(m + 0.5, ["Insulin", "Fast-Acting", "", "", "", "", f"{u:g}", "", "", "", "", ""]) for m, u in boluses]
    events += [(1440 + 21 * 60, ["Insulin", "Long-Acting", "", "", "", "", "14", "", "", "", "", ""]),
               (1440 + 8 * 60, ["Exercise", "Medium", "", "", "", "", "", "", "00:30:00", "", "", ""]),
               (1440 + 9 * 60, ["Health", "Stress", "", "", "", "", "", "", "", "", "", ""])]
    events.sort(key=lambda e: e[0])
    events[40:40] = [events[40]]  # duplicated rows, as exports of overlapping ranges give
    events.insert(200, events[200])
    events.insert(300, events[300])
    preamble = [["FirstName", "", "Jane", "", "", "", "", "", "", "", "", ""],
                ["LastName", "", "Doe", "", "", "", "", "", "", "", "", ""],
                ["Device", "", "", "Dexcom G6 Mobile App", "iOS G6", "", "", "", "", "", "", ""],
                ["Alert", "High", "", "", "iOS G6", "250", "", "", "", "", "", ""],
                ["Alert", "Low", "", "", "iOS G6", "70", "", "", "", "", "", ""],
                ["Alert", "Urgent Low", "", "", "iOS G6", "55", "", "", "", "", "", ""]]
    rows = [DEXCOM_HEADER] + [[str(i + 1), ""] + r for i, r in enumerate(preamble)]
    rows += [[str(i + 1 + len(preamble)), wall(m)] + r for i, (m, r) in enumerate(events)]
    return csv_text(rows)


# --------------------------------------------------------------------------- Libre
def libre_header(unit):
    return ["Device", "Serial Number", "Device Timestamp", "Record Type", f"Historic Glucose {unit}",
            f"Scan Glucose {unit}", "Non-numeric Rapid-Acting Insulin", "Rapid-Acting Insulin (units)",
            "Non-numeric Food", "Carbohydrates (grams)", "Carbohydrates (servings)", "Non-numeric Long-Acting Insulin",
            "Long-Acting Insulin Value (units)", "Notes", f"Strip Glucose {unit}", "Ketone mmol/L",
            "Meal Insulin (units)", "Correction Insulin (units)", "User Change Insulin (units)"]


def libre(p, unit) -> str:
    minutes, glucose, meals, boluses, _ = p
    if unit == "mg/dL":
        glucose = with_sentinels(minutes, glucose, 40.0, 500.0)  # "LO" < 40, "HI" > 500
    t0 = datetime(2026, 1, 5)
    stamp = lambda m: (t0 + timedelta(minutes=float(m))).strftime("%d-%m-%Y %H:%M")
    fmt = (lambda g: "HI" if g > 500 else "LO" if g < 40 else str(int(round(g)))) if unit == "mg/dL" \
        else (lambda g: f"{g / 18.01559:.1f}")
    events = []
    for k, (m, g) in enumerate(zip(minutes, glucose)):
        if m % 15 == 0 and not 600 <= m < 780:  # historic every 15 min; a 3-h gap (sensor off)
            events.append((m, 0, {4: fmt(g)}))
        if k % 36 == 7:  # a scan every 3 h
            events.append((m + 1, 1, {5: fmt(g)}))
    events += [(m, 5, {9: str(int(g))}) for m, g in meals]
    events += [(m, 4, {7: f"{u:g}"}) for m, u in boluses]
    events += [(1320 + d * 1440, 4, {12: "14"}) for d in range(2)]  # long-acting at 22:00
    events += [(480, 2, {14: fmt(glucose[96])}), (1440 + 480, 2, {14: fmt(glucose[96 + 288])}),
               (900, 6, {13: "walk"}), (2000, 5, {8: "1"})]
    events.sort(key=lambda e: (e[0], e[1]))
    events[10:10] = [events[10], events[11]]
    rows = [["Glucose Data", "Generated on", "10-01-2026 09:40 UTC", "Generated by", "Jane Doe"], libre_header(unit)]
    for m, rtype, cells in events:
        row = ["FreeStyle Libre 3", "2A404063-0DB9-49F2-B234-9FD9FE48DBA6", stamp(m), str(rtype)] + [""] * 15
        for i, v in cells.items():
            row[i] = v
        rows.append(row)
    return csv_text(rows)


# --------------------------------------------------------------------------- CareLink
CARELINK_HEADER = ["Index", "Date", "Time", "New Device Time", "BG Source", "BG Reading (mg/dL)", "Linked BG Meter ID",
                   "Basal Rate (U/h)", "Temp Basal Amount", "Temp Basal Type", "Temp Basal Duration (h:mm:ss)",
                   "Bolus Type", "Bolus Volume Selected (U)", "Bolus Volume Delivered (U)", "Bolus Duration (h:mm:ss)",
                   "Prime Type", "Prime Volume Delivered (U)", "Alarm", "Suspend", "Rewind", "BWZ Estimate (U)",
                   "BWZ Target High BG (mg/dL)", "BWZ Target Low BG (mg/dL)", "BWZ Carb Ratio (g/U)",
                   "BWZ Insulin Sensitivity (mg/dL/U)", "BWZ Carb Input (grams)", "BWZ BG Input (mg/dL)",
                   "BWZ Correction Estimate (U)", "BWZ Food Estimate (U)", "BWZ Active Insulin (U)",
                   "Sensor Calibration BG (mg/dL)", "Sensor Glucose (mg/dL)", "ISIG Value", "Event Marker",
                   "Bolus Number", "Bolus Cancellation Reason", "BWZ Unabsorbed Insulin Total (U)",
                   "Final Bolus Estimate", "Scroll Step Size", "Insulin Action Curve Time",
                   "Sensor Calibration Rejected Reason", "Preset Bolus", "Bolus Source"]


def dexcom_cgm_only(p) -> str:
    """Clarity CSV of the sensor alone (EGV rows, the glucose as simulated), over the record's
    own two days: with `carelink(p, sensor=False)` the "Dexcom + pump" pair of notebook 07."""
    minutes, glucose, _, _, _ = p
    t0 = datetime(2026, 1, 5)
    rows = [DEXCOM_HEADER, ["1", "", "Device", "", "", "Dexcom G7 Mobile App", "iOS G7"] + [""] * 7]
    for m, g in zip(minutes, glucose):
        if 1500 <= m < 1530:  # a short signal loss
            continue
        when = (t0 + timedelta(minutes=float(m), seconds=17)).strftime("%Y-%m-%dT%H:%M:%S")
        rows.append([str(len(rows)), when, "EGV", "", "", "", "iOS G7", str(int(round(g))), "", "", "", "",
                     str(int(m * 60)), "4CD2EF"])
    return csv_text(rows)


def carelink(p, sensor: bool = True) -> str:
    minutes, glucose, meals, boluses, basal = p
    col = {name: i for i, name in enumerate(CARELINK_HEADER)}
    t0 = datetime(2026, 1, 5)

    def row(m, **cells):
        r = [""] * len(CARELINK_HEADER)
        when = t0 + timedelta(minutes=float(m))
        r[1], r[2] = when.strftime("%Y/%m/%d"), when.strftime("%H:%M:%S")
        for name, v in cells.items():
            r[col[name.replace("_", " ").replace("(", "(")]] = v
        return (m, r)

    pump = [row(0, **{"Basal Rate (U/h)": f"{basal:.3f}"}), row(1440, **{"Basal Rate (U/h)": f"{basal:.3f}"})]
    for m, g in meals:
        pump.append(row(m, **{"BWZ Carb Input (grams)": str(int(g)), "BWZ Carb Ratio (g/U)": "10"}))
    for k, (m, u) in enumerate(boluses):
        kind = "Square" if k == 2 else "Normal"
        extra = {"Bolus Duration (h:mm:ss)": "0:30:00"} if kind == "Square" else {}
        pump.append(row(m, **{"Bolus Type": kind, "Bolus Volume Selected (U)": f"{u:.2f}"}))  # programmed
        pump.append(row(m + 0.1, **{"Bolus Type": kind, "Bolus Volume Selected (U)": f"{u:.2f}",
                                    "Bolus Volume Delivered (U)": f"{u:.2f}", **extra}))
    pump += [row(1800, **{"Rewind": "true"}), row(1801, **{"Prime Type": "Manual", "Prime Volume Delivered (U)": "10"}),
             row(900, **{"Alarm": "LOW RESERVOIR"})]
    readings = [row(m, **{"Sensor Glucose (mg/dL)": str(int(round(g))), "ISIG Value": f"{g / 5:.2f}"})
              for m, g in zip(minutes, glucose) if not 2000 <= m < 2120]  # warm-up after a sensor change
    rows = [["Last Name", "First Name", "Patient ID", "Start Date", "End Date", "Device"],
            ["Doe", "Jane", "", "2026/01/05", "2026/01/06", "MiniMed 780G MMT-1886"], [],
            ["-------", "MiniMed 780G MMT-1886", "Pump", "NG1234567H"], CARELINK_HEADER]
    index = 0
    sections = ((pump, "Pump"), (readings, "Sensor")) if sensor else ((pump, "Pump"),)
    for section, label in sections:
        if label == "Sensor":
            rows += [["-------", "MiniMed 780G MMT-1886", "Sensor", "GT1234567"], CARELINK_HEADER]
        for m, r in sorted(section, key=lambda e: -e[0]):  # newest first
            r[0] = f"{index}.0000"
            index += 1
            rows.append(r)
    return csv_text(rows)


# --------------------------------------------------------------------------- Nightscout
def nightscout(p) -> tuple[str, str]:
    minutes, glucose, meals, boluses, basal = p
    t0 = datetime(2026, 1, 5, 6, 0, tzinfo=timezone.utc)  # 00:00 local at UTC-6
    utc = lambda m: t0 + timedelta(minutes=float(m))
    entries = [{"_id": f"e{k}", "type": "sgv", "sgv": int(round(g)), "direction": "Flat", "device": "xDrip-DexcomG6",
                "date": int(utc(m).timestamp() * 1000), "dateString": utc(m).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                "utcOffset": -360} for k, (m, g) in enumerate(zip(minutes, glucose)) if not 1000 <= m < 1060]
    entries += [{"_id": "m1", "type": "mbg", "mbg": int(round(glucose[100])), "date": int(utc(500).timestamp() * 1000),
                 "dateString": utc(500).strftime("%Y-%m-%dT%H:%M:%S.000Z")}]
    entries.sort(key=lambda e: -e["date"])
    entries.insert(5, dict(entries[5]))  # a duplicate
    iso = lambda m: utc(m).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    treatments = [{"eventType": "Meal Bolus", "created_at": iso(m), "carbs": int(g), "insulin": float(u),
                   "utcOffset": -360, "enteredBy": "loop"} for (m, g), (_, u) in zip(meals, boluses)]
    treatments += [{"eventType": "Correction Bolus", "created_at": iso(2500), "insulin": 0.5},
                   {"eventType": "Carb Correction", "created_at": iso(2600), "carbs": 12},
                   {"eventType": "Temp Basal", "created_at": iso(0), "absolute": basal, "rate": basal, "duration": 1440},
                   {"eventType": "Temp Basal", "created_at": iso(1440), "absolute": basal, "rate": basal,
                    "duration": 1440},
                   {"eventType": "Site Change", "created_at": iso(1700)},
                   {"eventType": "Note", "created_at": iso(1750), "notes": "new sensor"}]
    treatments.sort(key=lambda t: t["created_at"], reverse=True)
    return json.dumps(entries, separators=(",", ":")), json.dumps(treatments, indent=1)


# --------------------------------------------------------------------------- Tidepool
def tidepool(p) -> str:
    minutes, glucose, meals, boluses, basal = p
    t0 = datetime(2026, 1, 5, 5, 0, tzinfo=timezone.utc)  # 00:00 in New York (UTC-5)
    iso = lambda m: (t0 + timedelta(minutes=float(m))).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    base = {"timezoneOffset": -300, "uploadId": "upid_0123", "deviceId": "tandem_t:slim_x2"}
    data = [{**base, "type": "upload", "time": iso(0), "deviceTags": ["insulin-pump", "cgm"]},
            {**base, "type": "pumpSettings", "time": iso(0), "activeSchedule": "standard"}]
    data += [{**base, "type": "cbg", "time": iso(m), "value": round(g / 18.01559, 4), "units": "mmol/L"}
             for m, g in zip(minutes, glucose) if not 2200 <= m < 2260]
    data += [{**base, "type": "smbg", "time": iso(480), "value": round(glucose[96] / 18.01559, 4), "units": "mmol/L"}]
    data += [{**base, "type": "food", "time": iso(m), "nutrition": {"carbohydrate": {"net": int(g), "units": "grams"}}}
             for m, g in meals]
    for k, (m, u) in enumerate(boluses):
        if k == 4:  # a dual-wave bolus: 60 % now, 40 % over an hour
            data.append({**base, "type": "bolus", "subType": "dual/square", "time": iso(m), "normal": round(0.6 * u, 3),
                         "extended": round(0.4 * u, 3), "duration": 3600000})
        else:
            data.append({**base, "type": "bolus", "subType": "normal", "time": iso(m), "normal": u})
    data += [{**base, "type": "basal", "deliveryType": "scheduled", "time": iso(0), "rate": basal,
              "duration": 1440 * 60000},
             {**base, "type": "basal", "deliveryType": "temp", "time": iso(1440), "rate": basal * 0.8,
              "duration": 60 * 60000},
             {**base, "type": "basal", "deliveryType": "scheduled", "time": iso(1500), "rate": basal,
              "duration": 1380 * 60000},
             {**base, "type": "deviceEvent", "subType": "reservoirChange", "time": iso(1800)}]
    return json.dumps(data, separators=(",", ":"))


# --------------------------------------------------------------------------- OhioT1DM
def ohiot1dm(p) -> str:
    minutes, glucose, meals, boluses, basal = p
    t0 = datetime(2026, 1, 5)
    ts = lambda m: (t0 + timedelta(minutes=float(m))).strftime("%d-%m-%Y %H:%M:%S")
    ev = lambda **a: "\t\t<event " + " ".join(f'{k}="{v}"' for k, v in a.items()) + "/>"
    parts = ['<patient id="559" weight="99" insulin_type="Novalog">', "\t<glucose_level>"]
    parts += [ev(ts=ts(m), value=int(round(g))) for m, g in zip(minutes, glucose) if not 1300 <= m < 1400]
    parts += ["\t</glucose_level>", "\t<finger_stick>", ev(ts=ts(481), value=int(round(glucose[96]))),
              "\t</finger_stick>", "\t<basal>", ev(ts=ts(0), value=basal), ev(ts=ts(1440), value=basal), "\t</basal>",
              "\t<temp_basal>", ev(ts_begin=ts(1560), ts_end=ts(1620), value=0.0), "\t</temp_basal>", "\t<bolus>"]
    parts += [ev(ts_begin=ts(m), ts_end=ts(m), type="normal", dose=u, bwz_carb_input=0) for m, u in boluses]
    parts += ["\t</bolus>", "\t<meal>"] + [ev(ts=ts(m), type="Lunch", carbs=int(g)) for m, g in meals]
    parts += ["\t</meal>", "\t<exercise>", ev(ts=ts(1440 + 17 * 60 + 30), intensity=5, type="", duration=30,
                                              competitive=""), "\t</exercise>", "\t<basis_heart_rate>"]
    parts += [ev(ts=ts(m), value=int(70 + 10 * np.sin(m / 300))) for m in minutes if m % 30 == 0]
    parts += ["\t</basis_heart_rate>", "\t<sleep>", ev(ts_begin=ts(1380), ts_end=ts(1860), quality=2), "\t</sleep>",
              "</patient>"]
    return "<?xml version='1.0' encoding='UTF-8'?>\n" + "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- FHIR
def _observation(code, display, when, **value):
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when, **value}


def _qty(value, unit, code):
    return {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": code}


def fhir(p) -> str:
    minutes, glucose, meals, boluses, _ = p
    t0 = datetime(2026, 1, 5, tzinfo=timezone(timedelta(hours=1)))
    when = lambda m: (t0 + timedelta(minutes=float(m))).isoformat()
    res = [{"resourceType": "Patient", "id": "p1", "gender": "female"}]
    res += [_observation("99504-3", "Glucose [Mass/volume] in Interstitial fluid", when(m),
                         valueQuantity=_qty(int(round(g)), "mg/dL", "mg/dL"))
            for m, g in zip(minutes, glucose) if m % 15 == 0]
    res += [_observation("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer", when(480),
                         valueQuantity=_qty(int(round(glucose[96])), "mg/dL", "mg/dL")),
            _observation("15074-8", "Glucose [Moles/volume] in Blood", when(1920),
                         valueQuantity=_qty(round(glucose[384] / 18.01559, 1), "mmol/L", "mmol/L"))]
    for m in (540, 1980):
        res.append(_observation("85354-9", "Blood pressure panel", when(m), component=[
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
             "valueQuantity": _qty(124, "mmHg", "mm[Hg]")},
            {"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
             "valueQuantity": _qty(81, "mmHg", "mm[Hg]")}]))
        res.append(_observation("8867-4", "Heart rate", when(m), valueQuantity=_qty(72, "beats/minute", "/min")))
    res.append(_observation("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", when(600),
                            valueQuantity=_qty(0.9, "mg/dL", "mg/dL")))
    res += [_observation("9059-7", "Carbohydrate intake Estimated", when(m), valueQuantity=_qty(int(g), "g", "g"))
            for m, g in meals]
    med = lambda name, m, u: {"resourceType": "MedicationAdministration", "status": "completed",
                              "medicationCodeableConcept": {"text": name}, "subject": {"reference": "Patient/p1"},
                              "effectiveDateTime": when(m), "dosage": {"dose": _qty(u, "U", "[IU]")}}
    res += [med("insulin lispro 100 UNT/ML", m, u) for m, u in boluses]
    res += [med("insulin glargine 100 UNT/ML", 1320 + d * 1440, 14) for d in range(2)]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in res]}
    return json.dumps(bundle, separators=(",", ":"))


def main() -> None:
    p = patient()
    entries, treatments = nightscout(p)
    files = {"dexcom.csv": dexcom(p), "libre.csv": libre(p, "mg/dL"), "libre_mmol.csv": libre(p, "mmol/L"),
             "carelink.csv": carelink(p), "nightscout_entries.json": entries, "nightscout_treatments.json": treatments,
             "tidepool.json": tidepool(p), "ohiot1dm.xml": ohiot1dm(p), "fhir_bundle.json": fhir(p),
             "clarity_cgm.csv": dexcom_cgm_only(p), "carelink_pump.csv": carelink(p, sensor=False)}
    for name, text in files.items():
        (HERE / name).write_text(text)
        print(f"{name}: {len(text.encode()) // 1024} KiB")


if __name__ == "__main__":
    main()
