"""Bergman minimal model for type 1 diabetes, with subcutaneous insulin and meal absorption.

A deliberately simple glucose organ (8 states): the glucose-insulin minimal model of
Bergman et al. (1979), driven by the two-compartment subcutaneous insulin and gut
absorption models of Hovorka et al. (2004), plus a first-order plasma-to-interstitial
(sensor) lag. It reads the same timeline signals and writes the same outputs, in the
same units, as the UVA/Padova organ (`physiotwin.organs.glucose`), so the two are
interchangeable under one timeline and one observation model. It is meant as the cheap,
smooth mechanistic core of a hybrid (neural-residual) twin: no max/clip kinks, and the
basal state is an exact equilibrium.

References:
    [B79] Bergman RN, Ider YZ, Bowden CR, Cobelli C. Quantitative estimation of insulin
          sensitivity. Am J Physiol 236(6):E667-E677, 1979 (the minimal model, identified in
          dogs; the human ranges quoted below are those of later minimal-model IVGTT studies).
    [H04] Hovorka R, Canonico V, Chassin LJ, et al. Nonlinear model predictive control of
          glucose concentration in subjects with type 1 diabetes. Physiol Meas
          25(4):905-920, 2004 (gut absorption D1, D2; subcutaneous insulin S1, S2; plasma
          insulin I; parameter values t_max,G, t_max,I, A_G, k_e, V_I, V_G).
    [R99] Rebrin K, Steil GM, van Antwerp WP, Mastrototaro JJ. Subcutaneous glucose
          predicts plasma glucose independent of insulin: implications for continuous
          monitoring. Am J Physiol 277(3):E561-E571, 1999 (plasma -> interstitial lag,
          first order, a few to ~10 min).
    [F14] Facchinetti A, Del Favero S, Sparacino G, et al. Modeling the glucose sensor
          error. IEEE Trans Biomed Eng 61(3):620-629, 2014 (BG-to-IG kinetics modelled as
          a first-order system with a time constant of the order of 10 min).
    [F91] Fisher ME. A semiclosed-loop algorithm for the control of blood glucose levels
          in diabetics. IEEE Trans Biomed Eng 38(1):57-61, 1991 (minimal-model parameters
          for an insulin-dependent diabetic: p1 = 0.0287/min, p2 = 0.0283/min,
          p3 = 5.04e-5 (1/min^2)/(mU/L), i.e. S_I = p3/p2 = 1.8e-3 (1/min)/(mU/L)).

Symbols and units (time t in minutes; 1 U of insulin = 6000 pmol, the convention of
the UVA/Padova simulator):

    d      carbohydrate ingestion rate (timeline ``carbs``)                     mg/min
    u      subcutaneous insulin delivery: timeline insulin + (1 - basal_set) u_b BW
                                                                               pmol/min
    D1,D2  glucose in the two gut compartments                                  mg
    Ra     rate of appearance of meal glucose in plasma                        mg/kg/min
    S1,S2  insulin in the two subcutaneous compartments                         pmol
    I      plasma insulin concentration                                         pmol/L
    X      remote insulin action, deviation from basal                          1/min
    G      plasma glucose concentration                                         mg/dL
    Gs     interstitial (sensor) glucose concentration                          mg/dL

Equations, in order:

    gut [H04]            dD1/dt = A_G d - D1 / tau_m
                         dD2/dt = (D1 - D2) / tau_m
                         Ra     = D2 / (tau_m BW)                             (mg/kg/min)
    s.c. insulin [H04]   dS1/dt = u - S1 / tau_i
                         dS2/dt = (S1 - S2) / tau_i
    plasma insulin [H04] dI/dt  = S2 / (tau_i V_I BW) - k_e I
    insulin action [B79] dX/dt  = -p2 X + p2 S_I (I - I_b)
    glucose [B79]        dG/dt  = -(S_G + X) G + S_G G_b + Ra / V_G
    sensor [R99, F14]    dGs/dt = (G - Gs) / tau_s

(Hovorka's bioavailability A_G scales the gut input: A_G times what was eaten equals what
has appeared in plasma plus what is still in the gut.) The insulin
action equation uses the p2 S_I form of [B79]'s dX/dt = -p2 X + p3 (I - I_b), with
S_I = p3 / p2, so S_I is the insulin sensitivity of glucose disappearance in
(1/min) per pmol/L of plasma insulin (multiply by 6 for (1/min) per microU/mL).

Steady state. With the basal delivery u_b (pmol/kg/min) the states are

    D1 = D2 = 0,  S1 = S2 = u_b BW tau_i,  I = I_b = u_b / (k_e V_I),  X = 0,
    G = Gs = G_b,

exactly (`Bergman.initial_state`): I_b is derived from u_b, not a parameter. Before the
timeline sets a basal rate (``basal_set`` = 0) the patient's own u_b is delivered, as in
the UVA/Padova organ; afterwards the timeline's insulin signal carries the basal rate.

Writing X = S_I (I_a - I_b), with I_a the plasma insulin seen through the action delay
1/p2, the glucose equation reads dG/dt = -(GEZI + S_I I_a) G + S_G G_b + Ra / V_G with
GEZI = S_G - S_I I_b, the glucose effectiveness at zero insulin: with no insulin at all
glucose settles at S_G G_b / GEZI (a few times G_b in T1D, the diabetic drift), and it
only stays bounded if S_G > S_I I_b. The nominal parameters give I_b = 84.5 pmol/L, GEZI = 0.0036/min and
an insulin-free level of ~3.4 G_b (adult#001's u2ss: I_b = 74.8 pmol/L, ~2.7 G_b).

Parameter names shared with the bundled UVA/Padova patient table (``BW``, ``Gb``,
``u2ss``) mean the same quantity in the same unit there, so a bundled patient name
(``"adult#001"``) gives this organ the patient's weight, basal glucose and basal insulin
delivery; every other parameter takes its nominal value. (Composing this organ together
with the ``glucose`` organ makes those bare columns ambiguous: use a table with
qualified columns, ``bergman.BW``, then.)

Identifiability (`Bergman.calibrated`) from CGM plus logged meals and insulin, where
plasma glucose and insulin are not observed:

- A_G and V_G enter only as A_G / V_G, and V_I only with S_I (I is unobserved): fixed.
- k_e: S_I / k_e is the gain from insulin delivery to action, and the 7-min plasma
  mode is hidden behind the hour-long absorption: locally S_I and k_e correlate 1.00.
- p2 and tau_i are delays in series of similar length (50 and 55 min): the sensitivity
  of the CGM trace to one is that to the other (correlation 1.00 on a three-meal day):
  p2 is kept at its population value, tau_i is fitted (insulin products and injection
  sites differ between patients).
- tau_s is confounded with tau_m when only the sensor signal is seen (correlation
  -0.92): population value.
- u_b (u2ss) is the pump's basal setting, which is known; when the logged basal equals
  it, u_b cancels from the model (I - I_b) and only G_b sets the fasting level.

Fitted: G_b, S_G, S_I, tau_m, tau_i. On adult#001's three-meal day with boluses (Fisher
information of the CGM trace at the nominal parameters), these five have a condition
number ~1e3 and log-scale standard errors below 0.02 per mg/dL of noise; adding p2 raises
it to ~4e5.
"""

from __future__ import annotations

from physiotwin.contract import Input, Organ, Output, Param, Residual, State
from physiotwin.plugins import hookimpl

B79 = "Bergman et al., Am J Physiol 236:E667 (1979)"
H04 = "Hovorka et al., Physiol Meas 25:905 (2004)"
UVA = "UVA/Padova T1D simulator patient table (simglucose 0.2.11 vpatient_params.csv), same meaning and unit"


def _p(name, unit, value, desc, source, lower, upper, transform="log", scope="patient"):
    return Param(name, unit, value, desc, lower=lower, upper=upper, transform=transform, scope=scope, source=source)


class Bergman(Organ):
    """Bergman minimal model (T1D) with Hovorka subcutaneous insulin and gut absorption."""

    name = "bergman"
    description = "Bergman minimal model for T1D with s.c. insulin, two-compartment gut and sensor lag (8 states)"
    reference = ("Bergman et al. Am J Physiol 236:E667 (1979); Hovorka et al. Physiol Meas 25:905 (2004); "
                 "Rebrin et al. Am J Physiol 277:E561 (1999)")

    states = (
        State("D1", "mg", "meal glucose in the first gut compartment", scale=1e4),
        State("D2", "mg", "meal glucose in the second gut compartment", scale=1e4),
        State("S1", "pmol", "insulin in the first subcutaneous compartment", scale=1e4),
        State("S2", "pmol", "insulin in the second subcutaneous compartment", scale=1e4),
        State("I", "pmol/L", "plasma insulin concentration", scale=100.0),
        State("X", "1/min", "remote insulin action (deviation from basal)", nonnegative=False, scale=1e-2),
        State("G", "mg/dL", "plasma glucose concentration", scale=100.0),
        State("Gs", "mg/dL", "interstitial (sensor) glucose concentration", scale=100.0),
    )

    params = (
        _p("BW", "kg", 78.0, "body weight", UVA + "; nominal as the glucose organ", 20.0, 250.0),
        # basal state
        _p("Gb", "mg/dL", 120.0, "basal plasma glucose G_b (the level at basal insulin u_b)",
           UVA + "; nominal: T1D fasting target range", 40.0, 400.0),
        _p("u2ss", "pmol/kg/min", 1.4, "the patient's steady-state basal insulin delivery u_b",
           UVA + "; nominal 1.4 pmol/kg/min (~1.1 U/h at 78 kg)", 0.0, 20.0),
        # minimal model [B79]
        _p("S_G", "1/min", 0.012, "glucose effectiveness at basal insulin (p1 of the minimal model)",
           "minimal model [B79]; human IVGTT estimates ~0.01-0.04/min, [F91] 0.029/min; chosen at the low "
           "end for T1D, keeping GEZI = S_G - S_I I_b > 0", 1e-4, 0.2),
        _p("S_I", "1/min/(pmol/L)", 1.0e-4, "insulin sensitivity of glucose disappearance, p3/p2",
           "minimal model [B79] with 1 microU/mL = 6 pmol/L; chosen 1.0e-4 = 6e-4 (1/min)/(microU/mL), inside "
           "the human range ~2-10e-4 per microU/mL; [F91] 1.8e-3 per microU/mL", 1e-7, 1e-2),
        _p("p2", "1/min", 0.02, "rate of decay of remote insulin action",
           "minimal model [B79]; human estimates ~0.01-0.05/min; [F91] 0.0283/min", 1e-4, 0.5,
           scope="population"),
        # meal absorption [H04]
        _p("tau_m", "min", 40.0, "time-to-maximum of meal glucose absorption (t_max,G)", H04, 5.0, 300.0),
        _p("A_G", "1", 0.8, "carbohydrate bioavailability", H04, 0.0, 1.0, "logit", "fixed"),
        _p("V_G", "dL/kg", 1.6, "glucose distribution volume (0.16 L/kg)", H04, 0.5, 5.0, scope="population"),
        # subcutaneous and plasma insulin [H04]
        _p("tau_i", "min", 55.0, "time-to-maximum of s.c. insulin absorption (t_max,I)", H04, 5.0, 300.0),
        _p("k_e", "1/min", 0.138, "fractional elimination of plasma insulin", H04, 0.01, 2.0, scope="population"),
        _p("V_I", "L/kg", 0.12, "insulin distribution volume", H04, 0.01, 1.0, scope="population"),
        # sensor
        _p("tau_s", "min", 10.0, "plasma-to-interstitial glucose time constant",
           "Rebrin et al. 1999 (lag 5-10 min); Facchinetti et al. IEEE TBME 61:620 (2014); "
           "UVA/Padova ksc = 0.1/min", 1.0, 60.0, scope="population"),
    )

    inputs = (
        Input("carb_rate", "mg/min", 0.0, "carbohydrate ingestion rate", source="timeline.carbs"),
        Input("insulin_infusion", "pmol/min", 0.0, "subcutaneous insulin delivery (boluses + set basal)",
              source="timeline.insulin"),
        Input("basal_set", "1", 0.0, "1 once the timeline sets the basal rate; before, u2ss applies",
              source="timeline.basal_set"),
    )

    outputs = (
        Output("plasma_glucose", "mg/dL", "plasma glucose concentration G"),
        Output("subcutaneous_glucose", "mg/dL", "subcutaneous (sensor) glucose Gs"),
        Output("plasma_insulin", "pmol/L", "plasma insulin concentration I"),
        Output("glucose_appearance", "mg/kg/min", "rate of appearance of meal glucose Ra"),
    )

    residuals = (
        Residual("glucose_flux", "G", 1.0, ("G", "X", "I", "D1", "D2"),
                 "unmodelled glucose appearance and uptake: gastric emptying shape, endogenous production "
                 "and its delayed suppression, saturable and renal uptake"),
        Residual("insulin_action", "X", 1e-4, ("X", "I", "S2"),
                 "unmodelled insulin-action dynamics (absorption shape, hepatic vs peripheral delays)"),
    )

    calibrated = ("Gb", "S_G", "S_I", "tau_m", "tau_i")

    # fastest time constant: plasma insulin, 1/k_e ~ 7 min (explicit-solver stability)
    max_step = 10.0

    @staticmethod
    def basal_insulin(p):
        """I_b (pmol/L), the plasma insulin at the basal delivery u_b."""
        return p["u2ss"] / (p["k_e"] * p["V_I"])

    def initial_state(self, p, u):
        zero = 0.0 * p["BW"]
        s = p["u2ss"] * p["BW"] * p["tau_i"]  # pmol in each s.c. compartment at basal
        return {"D1": zero, "D2": zero, "S1": s, "S2": s, "I": self.basal_insulin(p), "X": zero,
                "G": p["Gb"], "Gs": p["Gb"]}

    def rhs(self, t, x, p, u):
        insulin = u["insulin_infusion"] + (1.0 - u["basal_set"]) * p["u2ss"] * p["BW"]  # pmol/min
        # gut (Hovorka 2004)
        dD1 = p["A_G"] * u["carb_rate"] - x["D1"] / p["tau_m"]
        dD2 = (x["D1"] - x["D2"]) / p["tau_m"]
        Ra = x["D2"] / (p["tau_m"] * p["BW"])  # mg/kg/min
        # subcutaneous and plasma insulin (Hovorka 2004)
        dS1 = insulin - x["S1"] / p["tau_i"]
        dS2 = (x["S1"] - x["S2"]) / p["tau_i"]
        dI = x["S2"] / (p["tau_i"] * p["V_I"] * p["BW"]) - p["k_e"] * x["I"]
        # minimal model (Bergman 1979), p2 S_I form
        dX = -p["p2"] * x["X"] + p["p2"] * p["S_I"] * (x["I"] - self.basal_insulin(p))
        dG = -(p["S_G"] + x["X"]) * x["G"] + p["S_G"] * p["Gb"] + Ra / p["V_G"]
        # sensor
        dGs = (x["G"] - x["Gs"]) / p["tau_s"]
        dx = {"D1": dD1, "D2": dD2, "S1": dS1, "S2": dS2, "I": dI, "X": dX, "G": dG, "Gs": dGs}
        y = {"plasma_glucose": x["G"], "subcutaneous_glucose": x["Gs"], "plasma_insulin": x["I"],
             "glucose_appearance": Ra}
        return dx, y


@hookimpl
def register_organs(register):
    register(Bergman)
