"""Beta-cell insulin secretion (the pancreas of non-T1D subjects).

Reference:
    Dalla Man C, Rizza RA, Cobelli C. Meal simulation model of the glucose-insulin
    system. IEEE Trans Biomed Eng 54(10):1740-1749, 2007, section II-E "Insulin
    secretion", with the normal-subject parameters of its Table 1. The model is
    the one of Toffolo et al. (2001) and Breda et al. (2001).

Equations (paper's symbols; G in mg/dL, time in minutes):

    S(t)      = gamma * Ipo(t)                                    secretion into the liver
    dIpo/dt   = -gamma * Ipo + Spo                                portal vein insulin
    Spo       = Y + K * dG/dt + Sb     if dG/dt > 0               (derivative control)
              = Y + Sb                 otherwise
    dY/dt     = -alpha * (Y - beta * (G - h))   if beta*(G - h) >= -Sb   (proportional control)
              = -alpha * Y - alpha * Sb          otherwise
    h         = Gb                                                 (threshold = basal glucose)

with Ipo(0) = Sb / gamma and Y(0) = 0. The secretion S enters the liver insulin
pool of the ``glucose`` organ through its flux port ``insulin_secretion``; Ipo also
suppresses endogenous glucose production there (term kp4 * Ipo).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from physiotwin.contract import Input, Organ, Output, Param, State
from physiotwin.extensions import PatientTable
from physiotwin.plugins import hookimpl

P07 = "Dalla Man 2007, Table 1 (normal subject)"


class Pancreas(Organ):
    """Beta-cell secretion of Dalla Man 2007 (normal subject)."""

    name = "pancreas"
    description = "beta-cell insulin secretion (Dalla Man 2007) for non-T1D subjects"
    reference = "Dalla Man, Rizza, Cobelli. IEEE TBME 54:1740 (2007), insulin secretion submodel"

    states = (
        State("Ipo", "pmol/kg", "insulin in the portal vein"),
        State("Y", "pmol/kg/min", "provision of new insulin (proportional control)", nonnegative=False),
    )
    params = (
        Param("K", "pmol/kg/(mg/dL)", 2.30, "pancreatic responsivity to the glucose rate of change",
              lower=0.0, transform="log", source=P07),
        Param("alpha", "1/min", 0.050, "delay between glucose signal and insulin secretion",
              lower=0.0, transform="log", source=P07),
        Param("beta", "pmol/kg/min/(mg/dL)", 0.11, "pancreatic responsivity to glucose",
              lower=0.0, transform="log", source=P07),
        Param("gamma", "1/min", 0.5, "transfer rate between portal vein and liver",
              lower=0.0, transform="log", source=P07),
        Param("Sb", "pmol/kg/min", 1.549342, "basal insulin secretion, (m6 - HEb)/m5", lower=0.0, transform="log", source=P07),
        Param("h", "mg/dL", 91.76, "glucose threshold of secretion (= basal glucose Gb)",
              lower=0.0, transform="log", source=P07),
    )
    inputs = (
        Input("G", "mg/dL", 91.76, "plasma glucose", source="glucose.plasma_glucose"),
        Input("dGdt", "mg/dL/min", 0.0, "rate of change of plasma glucose", source="glucose.plasma_glucose_rate"),
    )
    outputs = (
        Output("insulin_secretion", "pmol/kg/min", "insulin secretion S = gamma Ipo into the liver",
               flux_to="glucose.insulin_secretion"),
        Output("portal_insulin", "pmol/kg", "portal vein insulin Ipo"),
        Output("basal_secretion", "pmol/kg/min", "basal secretion Sb (sets hepatic extraction HE = HEb - m5 (S - Sb))"),
    )

    mode: str = eqx.field(static=True, default="reference")
    sharpness: float = eqx.field(static=True, default=0.01)

    def _ramp(self, z):
        if self.mode == "reference":
            return jnp.maximum(z, 0.0)
        return self.sharpness * jax.nn.softplus(z / self.sharpness)

    def initial_state(self, p, u):
        return {"Ipo": p["Sb"] / p["gamma"], "Y": 0.0 * p["Sb"]}

    def rhs(self, t, x, p, u):
        # Spo = Y + K max(dG/dt, 0) + Sb
        Spo = x["Y"] + p["K"] * self._ramp(u["dGdt"]) + p["Sb"]
        dIpo = -p["gamma"] * x["Ipo"] + Spo
        # dY/dt = -alpha (Y - max(beta (G - h), -Sb))
        drive = jnp.maximum(p["beta"] * (u["G"] - p["h"]), -p["Sb"])
        dY = -p["alpha"] * (x["Y"] - drive)
        y = {"insulin_secretion": p["gamma"] * x["Ipo"], "portal_insulin": x["Ipo"], "basal_secretion": p["Sb"]}
        return {"Ipo": dIpo, "Y": dY}, y


@hookimpl
def register_organs(register):
    register(Pancreas)


@hookimpl
def register_patient_tables(register):
    register(PatientTable("dalla_man_2007_normal", "physiotwin.organs", "data/dalla_man_2007_normal.csv",
                          "the normal subject of Dalla Man et al. 2007 (Table 1)", ("glucose", "pancreas")))
