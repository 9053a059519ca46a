"""Helpers shared by test files (importable: pytest's pythonpath includes tests/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DATA = Path(__file__).parent / "data"
UVA_PATIENTS = [f"{group}#{k:03d}" for group in ("adolescent", "adult", "child") for k in range(1, 11)]


def events_of(timeline) -> list[tuple[float, str, float, float | None]]:
    frame = timeline.to_frame()
    return [(float(r.time), r.kind, float(r.value), None if pd.isna(r.duration) else float(r.duration))
            for r in frame.itertuples()]
