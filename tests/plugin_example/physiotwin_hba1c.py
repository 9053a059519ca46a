"""Glycated haemoglobin driven by plasma glucose: an example third-party organ.

Haemoglobin is glycated at a rate proportional to plasma glucose and leaves with
red cells after their lifespan: dA/dt = k G (1 - A) - A / T. k is set so that a
mean glucose of 154 mg/dL gives HbA1c 7 % at steady state (ADAG, Nathan et al.,
Diabetes Care 31:1473, 2008); T = 120 days.
"""

import physiotwin as pt
from physiotwin.plugins import hookimpl


class HbA1c(pt.Organ):
    name = "hba1c"
    description = "glycated haemoglobin from plasma glucose (example plugin)"
    reference = "Nathan et al. Diabetes Care 31:1473 (2008)"
    states = (pt.State("A", "1", "glycated fraction of haemoglobin"),)
    params = (
        pt.Param("k", "1/min/(mg/dL)", 2.83e-9, "glycation rate per unit glucose", lower=0.0, source="ADAG fit"),
        pt.Param("T", "min", 120 * 1440.0, "red-cell lifespan", lower=0.0, source="textbook"),
    )
    inputs = (pt.Input("G", "mg/dL", 154.0, "plasma glucose", source="glucose.plasma_glucose"),)
    outputs = (pt.Output("hba1c", "percent", "HbA1c"),)

    def initial_state(self, p, u):
        r = p["k"] * u["G"] * p["T"]
        return {"A": r / (1.0 + r)}  # steady state at the starting glucose

    def rhs(self, t, x, p, u):
        dA = p["k"] * u["G"] * (1.0 - x["A"]) - x["A"] / p["T"]
        return {"A": dA}, {"hba1c": 100.0 * x["A"]}


@hookimpl
def register_organs(register):
    register(HbA1c)
