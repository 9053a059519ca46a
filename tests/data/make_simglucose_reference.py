"""Regenerate tests/data/simglucose_reference.npz (run from the repository root).

    python tests/data/make_simglucose_reference.py

Runs simglucose 0.2.11's T1DPatient (the reference UVA/Padova implementation) for
all 30 virtual patients on tests/data/reference_scenario.csv (24 h: meals of
several sizes, one eaten over 30 min, boluses, an extended bolus, two basal
changes), minute by minute, and stores plasma and subcutaneous glucose (mg/dL) at
every minute as float32 (ample for the 1 mg/dL comparison). Takes ~3 minutes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
import simglucose_reference  # noqa: E402


def scenario_events(path: Path) -> list[tuple[float, str, float, float | None]]:
    df = pd.read_csv(path)
    return [(float(r.time), r.kind, float(r.value), None if pd.isna(r.duration) else float(r.duration))
            for r in df.itertuples()]


def main() -> None:
    import simglucose
    from importlib import resources

    table = pd.read_csv(resources.files("simglucose").joinpath("params/vpatient_params.csv"))
    names = list(table.Name)
    events = scenario_events(HERE / "reference_scenario.csv")
    runs = [simglucose_reference.run(n, events, 1440) for n in names]
    np.savez_compressed(
        HERE / "simglucose_reference.npz",
        patients=np.asarray(names),
        minutes=np.arange(1441),
        plasma_glucose=np.stack([r["plasma_glucose"] for r in runs]).astype(np.float32),
        subcutaneous_glucose=np.stack([r["subcutaneous_glucose"] for r in runs]).astype(np.float32),
        simglucose_version=np.asarray(getattr(simglucose, "__version__", "0.2.11")),
    )


if __name__ == "__main__":
    main()
