"""Cycle-averaged (non-pulsatile) circulation with baroreflex, for hours-to-days runs.

References:
    Guyton AC, Coleman TG, Granger HJ. Circulation: overall regulation. Annu Rev
    Physiol 34:13-46, 1972 (mean filling pressure, venous return, cardiac function
    curve; the "Guyton model").
    Hallow KM, Gebremichael Y. A quantitative systems physiology model of renal
    function and blood pressure regulation: model description. CPT Pharmacometrics
    Syst Pharmacol 6:383-392, 2017 (nominal values; R code hallowkm/RenalModel,
    ``calcNomParams_human.R``).
    Rothe CF. Reflex control of veins and vascular capacitance. Physiol Rev
    63:1281-1342, 1983 (vascular compliance, unstressed volume, venous reflex).
    Guyton AC, Hall JE. Textbook of Medical Physiology, ch. 16 (capillary Starling
    forces, whole-body capillary filtration coefficient).
    Rowell LB. Human Cardiovascular Control. Oxford 1993 (exercise responses).
    Adamson J, Hillman RS. JAMA 205:609 (1968); Drucker WR, Chadwick CDJ, Gann DS.
    Arch Surg 116:1344 (1981) (after haemorrhage plasma protein is restored from the
    interstitial pool, by lymph, which keeps transcapillary refill going); Fleck A
    et al. Lancet 1985 (transcapillary escape rate of albumin ~5 %/h).

Equations (time in minutes; no heartbeat is resolved, every quantity is a
cycle average):

    exercise drive           dEx/dt  = (clip(e_u, 0, 1) - Ex) / tau_ex
    heart rate               HR      = HR0 * xHR * (1 - Ex) + HRmax * Ex
    cardiac function curve   CO      = Kc (Pra - P0),   Kc = Kc0 (HR/HR0)(1 + a_c Ex)   (linear Starling)
    unstressed volume        Vu      = Vu0 - dVu - a_Vu Ex                    (venoconstriction)
    mean filling pressure    Pmf     = (V - Vu) / Cv
    venous return            CO      = (Pmf - Pra) / RVR,   RVR = RVR0 (1 - a_RVR Ex)
      => solved analytically: CO = Kc (Pmf - P0) / (1 + Kc RVR),  Pra = P0 + CO / Kc
         ((Pmf - P0) passes through a softplus of width 0.25 mmHg so CO stays > 0)
    peripheral resistance    TPR     = TPR0 * xR / (1 + a_TPR Ex)             (muscle vasodilation)
    arterial pressure        MAP     = CO * TPR + Pra

Baroreflex (three first-order effectors, saturating, with a slowly resetting set
point; exercise resets the operating point upward by dP_ex * Ex):

    e          = MAP - Pset - dP_ex Ex
    dxHR/dt    = (1 + A_HR tanh(-G_HR e / A_HR) - xHR) / tau_HR
    dxR/dt     = (exp(A_R tanh(-G_R e / A_R)) - xR) / tau_R
    ddVu/dt    = (A_V tanh(-G_V e / A_V) - dVu) / tau_V
    dPset/dt   = (MAP - Pset) / tau_reset

Transcapillary exchange (Starling, linearised about the nominal state; plasma
protein amount M sets the plasma oncotic pressure):

    Vp         = (1 - Hct) V
    pi_p       = pi_p0 * (M / M0) * (Vp0 / Vp)
    Pc         = Pra + r_c (MAP - Pra)
    J          = Kfc [ (Pc - Pc0) - (Vi - Vi0)/Ci - (pi_p - pi_p0) ]        (blood -> interstitium)
    dV/dt      = (fluid_intake - urine_outflow - blood_loss) / 1000 - J
    dVi/dt     = J
    dM/dt      = (M0 - M) / tau_prot - blood_loss (1 - Hct) M / Vp / 1000
                 (tau_prot: return of interstitial albumin by lymph, ~20 h; not synthesis)

Pc0 is the capillary pressure at the organ's own nominal state (V = V0, no
reflex, no exercise), computed from the parameters, so every parameter set has an
analytic steady state (see `initial_state`).

Fluid balance: the kidney (``renal`` organ) owns body sodium and osmoregulation. It
pushes urine out of the blood volume (port ``urine_outflow``) and drinking into it
(port ``fluid_intake``; thirst rises with plasma sodium concentration). Alone, this
organ has neither (both ports are zero) and conserves volume except for blood loss.
Blood loss also removes plasma sodium: output ``sodium_loss`` (mmol/min) flows into
the renal organ's sodium pool, at the plasma sodium concentration it reports.
"""

from __future__ import annotations

import jax.numpy as jnp

from physiotwin.contract import FluxPort, Input, Organ, Output, Param, Residual, State
from physiotwin.plugins import hookimpl

HALLOW = "Hallow & Gebremichael 2017 CPT:PSP 6:383, calcNomParams_human.R"
GUYTON = "Guyton, Coleman & Granger, Annu Rev Physiol 1972"
ROTHE = "Rothe, Physiol Rev 1983"
TEXT = "Guyton & Hall, Textbook of Medical Physiology (ch. 16)"
ROWELL = "Rowell, Human Cardiovascular Control 1993 (exercise); calibrated"
BARO = "assumed; human baroreflex gain ~1 bpm/mmHg (Smyth 1969), open-loop gain ~2-3"
CAL = "derived: MAP 93 mmHg with CO 5 L/min at the nominal state"

_SOFT_P = 0.25  # mmHg, softplus width keeping the filling gradient (Pmf - P0) positive


def _p(name, unit, value, desc, source, transform="log", lower=0.0, upper=jnp.inf, scope="patient", prior_sd=None):
    return Param(name, unit, value, desc, lower=lower, upper=upper, transform=transform, scope=scope, source=source,
                 prior_sd=prior_sd)


def _softplus(x, s):
    return s * jnp.logaddexp(0.0, x / s)


def _oncotic(c):
    """Landis-Pappenheimer plasma oncotic pressure (mmHg) of protein at c g/dL."""
    return 1.629 * c + 0.2935 * c * c


class Cardiovascular(Organ):
    """Guyton-type cycle-averaged circulation, baroreflex, capillary exchange, exercise."""

    max_step = 0.5  # min: fastest time constants (reflex effectors, TGF) are 0.5-1 min
    shooting_window = 1440.0  # min: the set point resets and the volume follows the kidney over a day or more
    name = "cardiovascular"
    description = "cycle-averaged Guyton circulation with baroreflex, transcapillary refill and exercise"
    reference = ("Guyton et al. Annu Rev Physiol 34:13 (1972); Hallow & Gebremichael CPT:PSP 6:383 (2017); "
                 "Rothe Physiol Rev 63:1281 (1983)")

    states = (
        State("V", "L", "blood volume", scale=5.0),
        State("Vi", "L", "interstitial fluid volume", scale=12.0),
        State("M", "g", "plasma protein amount", scale=200.0),
        State("xHR", "1", "baroreflex heart-rate multiplier"),
        State("xR", "1", "baroreflex peripheral-resistance multiplier"),
        State("dVu", "L", "reflex venoconstriction (reduction of unstressed volume)", nonnegative=False),
        State("Pset", "mmHg", "baroreflex set point (resets slowly to the prevailing MAP)", scale=100.0),
        State("Ex", "1", "exercise drive (fraction of heart-rate reserve, lagged)"),
    )

    params = (
        # circulation (Guyton loop)
        _p("V0", "L", 5.0, "nominal blood volume", HALLOW),
        _p("Vu0", "L", 3.6, "unstressed vascular volume (~70% of blood volume)", ROTHE),
        _p("Cv", "L/mmHg", 0.2, "total vascular compliance (~3 mL/mmHg/kg); gives Pmf 7 mmHg", ROTHE),
        _p("RVR0", "mmHg*min/L", 1.0, "resistance to venous return", GUYTON + "; Pra 2 mmHg at CO 5 L/min"),
        _p("Kc0", "L/min/mmHg", 2.5, "slope of the (linear) cardiac function curve at HR0", GUYTON),
        _p("P0", "mmHg", 0.0, "right atrial pressure at which the heart's output is zero", GUYTON,
           transform="identity", lower=-5.0, upper=5.0),
        _p("TPR0", "mmHg*min/L", 18.2, "nominal total peripheral resistance", CAL, prior_sd=0.15),
        _p("HR0", "1/min", 70.0, "resting heart rate", "typical adult (60-80 /min: between-patient SD ~10 %)",
           prior_sd=0.1),
        _p("HRmax", "1/min", 185.0, "maximal heart rate (220 - age, age 35)", "Fox 1971; 220 - age"),
        # baroreflex
        _p("G_HR", "1/mmHg", 0.012, "baroreflex gain on heart rate (fraction of HR0 per mmHg)",
           BARO + "; between-patient spread ~+-30 % (La Rovere 2008)", prior_sd=0.3),
        _p("A_HR", "1", 0.6, "maximal fractional heart-rate change by the reflex", BARO),
        _p("tau_HR", "min", 0.5, "heart-rate effector time constant", BARO + " (>=0.5 min for tractability)"),
        _p("G_R", "1/mmHg", 0.012, "baroreflex gain on peripheral resistance (log-fraction per mmHg)", BARO),
        _p("A_R", "1", 0.5, "maximal log-change of resistance by the reflex", BARO),
        _p("tau_R", "min", 1.0, "resistance effector time constant", BARO),
        _p("G_V", "L/mmHg", 0.01, "reflex venoconstriction per mmHg below set point", ROTHE),
        _p("A_V", "L", 0.5, "maximal reflex mobilisation of unstressed volume", ROTHE),
        _p("tau_V", "min", 1.5, "venous effector time constant", BARO),
        _p("tau_reset", "min", 1440.0, "baroreflex resetting time constant (~1 day)",
           "Krieger 1989; assumed 1 day"),
        # transcapillary exchange
        _p("Hct", "1", 0.42, "haematocrit (held constant)", "typical adult", transform="logit", upper=1.0),
        _p("Vi0", "L", 12.1, "nominal interstitial volume (ECF 15 L - plasma 2.9 L)", HALLOW + " (ECF 15 L)"),
        _p("Ci", "L/mmHg", 0.5, "interstitial compliance (normal, non-oedematous range)", TEXT),
        _p("Kfc", "L/min/mmHg", 0.00667, "whole-body capillary filtration coefficient", TEXT),
        _p("r_c", "1", 0.17, "capillary pressure position between venous and arterial pressure (Pc ~17 mmHg)",
           TEXT, transform="logit", upper=1.0),
        _p("c_prot", "g/dL", 7.0, "nominal plasma protein concentration", HALLOW),
        _p("tau_prot", "min", 1200.0,
           "restoration time of plasma protein after loss (return of interstitial albumin by lymph)",
           "Adamson & Hillman, JAMA 205:609 (1968): after 15-20 % phlebotomy the replaced plasma protein "
           "comes from the extravascular pool, not synthesis; Drucker, Chadwick & Gann, Arch Surg 116:1344 "
           "(1981); transcapillary escape (= lymph return) of albumin ~5 %/h of the plasma pool, "
           "1/(0.05/h) = 20 h (Fleck et al., Lancet 1985)"),
        # exercise
        _p("tau_ex", "min", 1.0, "exercise on/off kinetics", ROWELL),
        _p("a_c", "1", 0.5, "contractility increase at maximal exercise", ROWELL),
        _p("a_RVR", "1", 0.6, "fall of resistance to venous return at maximal exercise (muscle pump)", ROWELL,
           transform="logit", upper=1.0),
        _p("a_Vu", "L", 0.5, "blood mobilised from unstressed volume at maximal exercise", ROWELL),
        _p("a_TPR", "1", 1.33, "rise of peripheral conductance at maximal exercise (muscle vasodilation)", ROWELL),
        _p("dP_ex", "mmHg", 15.0, "upward baroreflex resetting at maximal exercise (central command)", ROWELL,
           transform="identity"),
    )

    inputs = (
        Input("exercise", "1", 0.0, "exercise intensity, fraction of heart-rate reserve", source="timeline.exercise"),
        Input("blood_loss", "mL/min", 0.0, "rate of haemorrhage (whole blood)", source="timeline.blood_loss"),
        Input("sodium_concentration", "mmol/L", 140.0, "plasma sodium concentration (lost with plasma)",
              source="renal.plasma_sodium"),
    )

    ports = (
        FluxPort("urine_outflow", "mL/min", "urine leaving the blood volume", pool="blood_volume"),
        FluxPort("fluid_intake", "mL/min", "water drunk/absorbed into the blood volume", pool="blood_volume_intake"),
    )

    outputs = (
        Output("MAP", "mmHg", "mean arterial pressure"),
        Output("CO", "L/min", "cardiac output"),
        Output("HR", "1/min", "heart rate"),
        Output("HR_rise", "1/min", "heart rate above rest, HR - HR0 (the exercise signal of Breton 2008)"),
        Output("blood_volume", "L", "blood volume"),
        Output("venous_pressure", "mmHg", "central venous (right atrial) pressure"),
        Output("stroke_volume", "mL", "stroke volume CO / HR"),
        Output("TPR", "mmHg*min/L", "total peripheral resistance"),
        Output("mean_filling_pressure", "mmHg", "mean systemic filling pressure"),
        Output("plasma_volume", "L", "plasma volume (1 - Hct) V"),
        Output("interstitial_volume", "L", "interstitial fluid volume"),
        Output("ECF_volume", "L", "extracellular fluid volume, plasma + interstitium"),
        Output("capillary_filtration", "mL/min", "net transcapillary filtration J (blood -> interstitium)"),
        Output("baroreflex_setpoint", "mmHg", "baroreflex set point"),
        Output("sodium_loss", "mmol/min", "sodium lost with shed plasma",
               depends_on=("blood_loss", "sodium_concentration"), flux_to="renal.sodium_loss"),
    )

    # identifiable from cuff pressure and heart rate (with the population prior): the level of
    # resistance, the resting heart rate and the reflex gain that couples the two; compliance,
    # contractility and capillary exchange are not seen through MAP and HR alone
    calibrated = ("TPR0", "HR0", "G_HR")

    # where a hybrid may learn what the cycle-averaged mechanism misses: vasomotor tone that
    # the baroreflex does not explain (diurnal rhythm, activity, stress), acting on the
    # resistance effector; it sees pressure, heart rate, volume and the reflex set point
    residuals = (
        Residual("vascular_tone", "xR", 0.02, ("MAP", "HR", "V", "Pset"),
                 "unmodelled vasomotor tone (1/min on the resistance multiplier)"),
    )

    # ------------------------------------------------------------------ algebra
    @staticmethod
    def _circulation(p, V, xHR, xR, dVu, Ex):
        """Guyton loop solved in closed form; returns a dict of hemodynamic values."""
        HR = p["HR0"] * xHR * (1.0 - Ex) + p["HRmax"] * Ex
        Kc = jnp.maximum(p["Kc0"] * (HR / p["HR0"]) * (1.0 + p["a_c"] * Ex), 1e-3)  # guard: > 0
        RVR = jnp.maximum(p["RVR0"] * (1.0 - p["a_RVR"] * Ex), 1e-3)
        Vu = p["Vu0"] - dVu - p["a_Vu"] * Ex
        Pmf = (V - Vu) / p["Cv"]
        drive = _softplus(Pmf - p["P0"], _SOFT_P)  # Pmf - P0, kept > 0
        CO = Kc * drive / (1.0 + Kc * RVR)
        Pra = p["P0"] + CO / Kc
        TPR = p["TPR0"] * xR / (1.0 + p["a_TPR"] * Ex)
        MAP = CO * TPR + Pra
        Pc = Pra + p["r_c"] * (MAP - Pra)
        return {"HR": HR, "CO": CO, "Pra": Pra, "Pmf": Pmf, "TPR": TPR, "MAP": MAP, "Pc": Pc}

    def _nominal(self, p):
        """The organ's own nominal state: V = V0, reflex neutral, at rest."""
        one, zero = 1.0 + 0.0 * p["V0"], 0.0 * p["V0"]
        return self._circulation(p, p["V0"], one, one, zero, zero)

    def initial_state(self, p, u):
        # steady state at rest with no blood loss: reflex neutral, set point = MAP,
        # Starling forces balanced, protein at its nominal amount
        ex = jnp.clip(u["exercise"], 0.0, 1.0)
        one = 1.0 + 0.0 * p["V0"]
        h = self._circulation(p, p["V0"], one, one, 0.0 * one, ex)
        nom = self._nominal(p)
        Vp0 = (1.0 - p["Hct"]) * p["V0"]
        M0 = p["c_prot"] * 10.0 * Vp0  # g/dL * dL
        # J = 0 with M = M0, V = V0: interstitial volume absorbs any Pc difference
        Vi = p["Vi0"] + p["Ci"] * (h["Pc"] - nom["Pc"])
        return {"V": p["V0"], "Vi": Vi, "M": M0, "xHR": one, "xR": one, "dVu": 0.0 * one,
                "Pset": h["MAP"] - p["dP_ex"] * ex, "Ex": ex}

    def rhs(self, t, x, p, u):
        V, Vi, M = x["V"], x["Vi"], x["M"]
        ex_in = jnp.clip(u["exercise"], 0.0, 1.0)
        h = self._circulation(p, V, x["xHR"], x["xR"], x["dVu"], x["Ex"])
        nom = self._nominal(p)

        # --- baroreflex
        e = h["MAP"] - x["Pset"] - p["dP_ex"] * x["Ex"]
        xHR_target = 1.0 + p["A_HR"] * jnp.tanh(-p["G_HR"] * e / p["A_HR"])
        xR_target = jnp.exp(p["A_R"] * jnp.tanh(-p["G_R"] * e / p["A_R"]))
        dVu_target = p["A_V"] * jnp.tanh(-p["G_V"] * e / p["A_V"])
        dxHR = (xHR_target - x["xHR"]) / p["tau_HR"]
        dxR = (xR_target - x["xR"]) / p["tau_R"]
        ddVu = (dVu_target - x["dVu"]) / p["tau_V"]
        dPset = (h["MAP"] - x["Pset"]) / p["tau_reset"]
        dEx = (ex_in - x["Ex"]) / p["tau_ex"]

        # --- transcapillary exchange (Starling)
        Vp0 = (1.0 - p["Hct"]) * p["V0"]
        Vp = jnp.maximum((1.0 - p["Hct"]) * V, 1e-3)  # guard: plasma volume > 0
        M0 = p["c_prot"] * 10.0 * Vp0
        pi0 = _oncotic(p["c_prot"])
        pi_p = pi0 * (M / M0) * (Vp0 / Vp)
        J = p["Kfc"] * ((h["Pc"] - nom["Pc"]) - (Vi - p["Vi0"]) / p["Ci"] - (pi_p - pi0))  # L/min

        # --- volumes
        loss = u["blood_loss"]  # mL/min
        dV = (u["fluid_intake"] - u["urine_outflow"] - loss) / 1000.0 - J
        dVi = J
        dM = (M0 - M) / p["tau_prot"] - loss / 1000.0 * (1.0 - p["Hct"]) * M / Vp

        dx = {"V": dV, "Vi": dVi, "M": dM, "xHR": dxHR, "xR": dxR, "dVu": ddVu, "Pset": dPset, "Ex": dEx}
        y = {
            "MAP": h["MAP"],
            "CO": h["CO"],
            "HR": h["HR"],
            "HR_rise": h["HR"] - p["HR0"],
            "blood_volume": V,
            "venous_pressure": h["Pra"],
            "stroke_volume": 1000.0 * h["CO"] / h["HR"],
            "TPR": h["TPR"],
            "mean_filling_pressure": h["Pmf"],
            "plasma_volume": (1.0 - p["Hct"]) * V,
            "interstitial_volume": Vi,
            "ECF_volume": (1.0 - p["Hct"]) * V + Vi,
            "capillary_filtration": 1000.0 * J,
            "baroreflex_setpoint": x["Pset"],
            "sodium_loss": loss / 1000.0 * (1.0 - p["Hct"]) * u["sodium_concentration"],
        }
        return dx, y


@hookimpl
def register_organs(register):
    register(Cardiovascular)
