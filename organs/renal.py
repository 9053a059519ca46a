"""Reduced Hallow & Gebremichael (2017) kidney: hemodynamics, GFR, tubular sodium,
RAAS, osmoregulation, creatinine, renal glucose handling and an SGLT2 inhibitor.

References:
    Hallow KM, Gebremichael Y. A quantitative systems physiology model of renal
    function and blood pressure regulation: model description. CPT Pharmacometrics
    Syst Pharmacol 6:383-392, 2017. R code: github.com/hallowkm/RenalModel
    (``calcNomParams_human.R`` for nominal values, ``modelfile.R`` for equations).
    Landis EM, Pappenheimer JR. Handbook of Physiology, Circulation II, 1963
    (oncotic pressure).
    Koenig M, et al. (empagliflozin PBPK/PD model; SGLT2 inhibition Emax ~0.75).
    Empagliflozin (Jardiance) EU SmPC; Scheen AJ, Clin Pharmacokinet 53:213, 2014
    (CL/F 10.6 L/h, V/F 73.8 L, tmax ~1.5 h, t1/2 ~12 h).
    DeFronzo RA et al. Diabetes Care 36:3169 (2013) and Rieg T et al., Am J Physiol
    Renal 306:F188 (2014) (renal threshold ~180 mg/dL, TmG ~375 mg/min, SGLT1
    reserve when SGLT2 is blocked).
    Vallon V, Thomson SC. Diabetologia 60:215 (2017) (with SGLT2 inhibited, the
    residual (SGLT1) reabsorptive capacity is ~80 g/day).
    Al-Jobori H et al. Diabetes 66:1999 (2017) (empagliflozin 25 mg, stepped
    hyperglycaemic clamp: TmG -53 +- 6 % after 48 h in non-diabetic subjects,
    -44 +- 7 % in T2D; threshold for spillage < 40 mg/dL).
    Liu JJ, Lee TW, DeFronzo RA. Diabetes 61:2199 (2012) (SGLT2 inhibitors leave
    30-50 % of the filtered glucose load unreabsorbed).

Time in minutes. Equations, in the order of the paper (reduced; symbols in comments):

Renal vasculature (AT1 = AT1-bound angiotensin II, normalised; power laws are the
local slopes of Hallow's sigmoids at the nominal point; as in Hallow's code the
whole-kidney resistances do not scale with the number of functional nephrons
n = nephrons / 2e6, which scales the filtration coefficient only):

    R_pre = R_pre0 AT1^a_pre;  R_aff = R_aff0 TGF AT1^a_aff;  R_eff = R_eff0 AT1^a_eff
    RVR   = R_pre + R_aff + R_eff + R_peri0
    RBF   = (MAP - Pv) / RVR                       (MAP - Pv through a softplus: RBF > 0)
    P_pre = MAP - RBF R_pre;   Pgc = P_pre - RBF R_aff;   RIHP = Pgc - RBF R_eff

Glomerular filtration (Starling; oncotic pressure linear along the capillary,
pi_out = pi_in RPF / (RPF - GFR), which gives a quadratic solved in closed form):

    K     = n 2e6 Kf_sn;   RPF = (1 - Hct) RBF;   dP = Pgc - P_B;   pi_in = LP(c_prot)
    GFR   = K (dP - pi_avg),  pi_avg = pi_in/2 (1 + RPF/(RPF - GFR))
          => GFR = 2 K RPF (dP - pi_in) / ((RPF + K a) + sqrt((RPF - K a)^2 + 2 pi_in K RPF)),  a = dP - pi_in/2

Tubular sodium (fractional reabsorption in logit form so every fraction stays in
(0, 1); pressure natriuresis through renal interstitial hydrostatic pressure RIHP):

    FL_Na  = GFR C_Na
    eta_pt = sig(logit eta_pt0 - k_px dRIHP + b_at1 ln AT1);  PT_out = FL_Na (1 - eta_pt) - (cot - cot0)
    eta_lh = sig(logit eta_lh0 - k_px dRIHP);                 MD     = PT_out (1 - eta_lh)   (macula densa)
    eta_dt = sig(logit eta_dt0 - k_ds dRIHP);                 DT_out = MD (1 - eta_dt)
    eta_cd = sig(logit eta_cd0 - k_ds dRIHP + b_aldo ln Aldo); U_Na  = DT_out (1 - eta_cd)
    cot    = (R_SGLT2 + 2 R_SGLT1) / MW_glucose   (sodium co-transported with glucose)

Tubuloglomerular feedback and RAAS (lag states; AngI/AngII are quasi-steady, so PRA
drives AT1-bound AngII directly):

    dTGF/dt   = (1 - S/2 + S sig(k_tgf (MD/MD0 - 1)) - TGF) / tau_tgf
    dRenin/dt = ln2/t_renin (exp(-k_md (MD/MD0 - 1) - k_pp (P_pre - P_pre0)) AT1^b_fb - Renin)
    dAT1/dt   = ln2/t_at1 (Renin - AT1)
    dAldo/dt  = (AT1^b_ald - Aldo) / tau_aldo

Osmoregulation (vasopressin sets urine osmolality; thirst sets water intake; both
rise with plasma sodium concentration, so at steady state intake = urine with
C_Na within ~1 mmol/L of its set point):

    C_Na   = Na / ECF
    dADH/dt = (exp(k_adh (C_Na/C_ref - 1)) - ADH) / tau_adh
    U_osm  = U_min + (U_max - U_min) sig(L_u0 + g_u ln ADH)
    urine  = (2 U_Na + osm_other + UGE/MW_glucose) / U_osm       (osmotic diuresis from glucosuria)
    intake = W0 ADH^g_th
    dNa/dt = Na_intake - U_Na - sodium_loss

Glucose (smooth minima of width s_glc; SGLT2 inhibited by I; SGLT1 reserve takes
part of what SGLT2 leaves):

    FL_G   = GFR G;   cap = smin(GFR RTG, TmG)
    R2     = smin(FL_G, (1 - I) cap);   R1 = smin(FL_G - R2, f_sglt1 cap);   R = smin(R2 + R1, cap)
    UGE    = FL_G - R

  The SGLT1 reserve f_sglt1 cap is a capacity: ~80 g/day = 56 mg/min (Vallon &
  Thomson 2017), i.e. 40-50 % of the *euglycaemic filtered load* (~120 mg/min;
  Rieg 2014) or ~0.25 of cap (216 mg/min at GFR 120, RTG 180). Under maximal
  inhibition the remaining capacity (1 - Imax + f_sglt1) cap = 0.50 cap matches the
  clamp-measured fall of TmG by 53 +- 6 % on empagliflozin (Al-Jobori 2017).

Creatinine:  d(SCr)/dt = (P_cr - GFR SCr) / V_cr.

SGLT2 inhibitor (oral empagliflozin, one compartment with first-order absorption):

    dA_gut/dt = dose - ka A_gut;   dA_c/dt = ka A_gut - (CL_nr + CL_r GFR/GFR_n) A_c / V_d
    C = A_c / V_d;  I = Imax C / (C + EC50)

Parameters marked "derived" are computed once, here, at the nominal steady state
(MAP 93 mmHg, venous pressure 2 mmHg, glucose 100 mg/dL, sodium intake 100 mmol/day,
all regulators at 1), the way Hallow's ``calcNomParams`` does. They are fixed: a
patient with, e.g., fewer nephrons is then out of balance at nominal pressure and
settles at a new steady state (higher MAP), as in the paper.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from physiotwin.contract import FluxPort, Input, Organ, Output, Param, Residual, State
from physiotwin.plugins import hookimpl

HALLOW = "Hallow & Gebremichael 2017 CPT:PSP 6:383, calcNomParams_human.R"
HALLOW_EQ = "Hallow & Gebremichael 2017, modelfile.R (local slope of the sigmoid at nominal)"
DERIVED = "derived at the nominal steady state (as Hallow's calcNomParams)"
GLC = "DeFronzo 2013 Diabetes Care 36:3169; Rieg 2014 AJP Renal 306:F188"
EMPA = "empagliflozin SmPC; Scheen 2014 Clin Pharmacokinet 53:213"
MW_GLUCOSE = 180.156  # mg/mmol
MW_EMPA = 450.91  # g/mol
N_REF = 2.0e6  # nephrons of the nominal kidney (Hallow baseline_nephrons)

# nominal operating point used to derive the fixed constants
NOMINAL_INPUTS = {"MAP": 93.0, "Pv": 2.0, "G": 100.0, "Na_intake": 100.0, "ECF": 15.0}
GFR_TARGET = 120.0  # mL/min, nominal GFR (brief; Hallow's 3.9 nL/min/mmHg gives ~95)
URINE_NOMINAL = 1.5  # L/day


def _p(name, unit, value, desc, source, transform="log", lower=0.0, upper=math.inf, scope="patient", prior_sd=None):
    return Param(name, unit, float(value), desc, lower=lower, upper=upper, transform=transform, scope=scope,
                 source=source, prior_sd=prior_sd)


# ----------------------------------------------------------------------- algebra
# Written against an array module ``xp`` (numpy at import for the derived constants,
# jax.numpy inside rhs) so both use exactly the same equations.

def _sig(xp, z):
    return 1.0 / (1.0 + xp.exp(-z))


def _logit(q, xp=math):
    return xp.log(q / (1.0 - q))


def _softplus(xp, z, s):
    return s * xp.logaddexp(0.0, z / s)


def _smin(xp, a, b, s):
    return -s * xp.logaddexp(-a / s, -b / s)


def _sat(xp, z, A=8.0):
    """z, smoothly saturated at +-A (keeps exponentials finite for wild trial states)."""
    return A * xp.tanh(z / A)


def _oncotic(c):
    return 1.629 * c + 0.2935 * c * c  # Landis-Pappenheimer, mmHg at c g/dL


def _kidney(xp, p, MAP, Pv, G, C_Na, TGF, AT1, Aldo, I):
    """Algebraic part of the kidney for given inputs and regulator states."""
    n = p["nephrons"] / N_REF
    AT1 = xp.maximum(AT1, 1e-6)
    Aldo = xp.maximum(Aldo, 1e-6)
    lnA = _sat(xp, xp.log(AT1))
    # --- vasculature
    R_pre = p["R_pre0"] * xp.exp(p["a_pre"] * lnA)
    R_aff = p["R_aff0"] * xp.maximum(TGF, 1e-3) * xp.exp(p["a_aff"] * lnA)
    R_eff = p["R_eff0"] * xp.exp(p["a_eff"] * lnA)
    R_peri = p["R_peri0"]
    RVR = R_pre + R_aff + R_eff + R_peri
    RBF = _softplus(xp, MAP - Pv, 0.5) / RVR  # L/min
    P_pre = MAP - RBF * R_pre
    Pgc = P_pre - RBF * R_aff
    RIHP = Pgc - RBF * R_eff
    # --- glomerular filtration
    K = n * N_REF * p["Kf_sn"] * 1e-6  # mL/min/mmHg
    F = (1.0 - p["Hct_r"]) * RBF * 1000.0  # renal plasma flow, mL/min
    pi_in = _oncotic(p["c_prot_r"])
    dP = Pgc - p["P_B"]
    a = dP - 0.5 * pi_in
    g = 2.0 * K * F * (dP - pi_in) / ((F + K * a) + xp.sqrt((F - K * a) ** 2 + 2.0 * pi_in * K * F))
    GFR = _softplus(xp, g, 0.5)  # mL/min, > 0 when filtration stops
    # --- glucose (mg/min)
    s = p["s_glc"]
    FLG = GFR * G / 100.0
    cap = _smin(xp, GFR * p["RTG"] / 100.0, p["TmG"], s)
    R2 = _smin(xp, FLG, (1.0 - I) * cap, s)
    R1 = _smin(xp, FLG - R2, p["f_sglt1"] * cap, s)
    R = _smin(xp, R2 + R1, cap, s)
    UGE = FLG - R
    cot = (R2 + 2.0 * (R - R2)) / MW_GLUCOSE  # mmol Na/min co-transported (SGLT2 1:1, SGLT1 2:1)
    # --- tubular sodium (mmol/min)
    dR = RIHP - p["RIHP0"]
    FLNa = GFR / 1000.0 * C_Na
    eta_pt = _sig(xp, _logit(p["eta_pt0"], xp) - p["k_pn_prox"] * dR + p["b_at1_pt"] * lnA)
    PT_out = _softplus(xp, FLNa * (1.0 - eta_pt) - (cot - p["cot0"]), 1e-3)
    eta_lh = _sig(xp, _logit(p["eta_lh0"], xp) - p["k_pn_prox"] * dR)
    MD = PT_out * (1.0 - eta_lh)
    eta_dt = _sig(xp, _logit(p["eta_dt0"], xp) - p["k_pn_dist"] * dR)
    DT_out = MD * (1.0 - eta_dt)
    eta_cd = _sig(xp, _logit(p["eta_cd0"], xp) - p["k_pn_dist"] * dR + p["b_aldo"] * xp.log(Aldo))
    UNa = DT_out * (1.0 - eta_cd)
    return {"RBF": RBF, "RVR": RVR, "P_pre": P_pre, "Pgc": Pgc, "RIHP": RIHP, "GFR": GFR, "RPF": F,
            "FLG": FLG, "UGE": UGE, "cot": cot, "FLNa": FLNa, "MD": MD, "UNa": UNa}


def _regulator_targets(xp, p, k, AT1):
    """Steady-state targets of TGF, renin and aldosterone for kidney values k."""
    rel = k["MD"] / p["MD0"] - 1.0
    S = p["S_tgf"]
    tgf = 1.0 - 0.5 * S + S * _sig(xp, p["k_tgf"] * rel)
    AT1 = xp.maximum(AT1, 1e-9)
    renin = xp.exp(_sat(xp, -p["k_md"] * rel - p["k_pp"] * (k["P_pre"] - p["P_pre0"]) + p["b_fb"] * xp.log(AT1)))
    aldo = xp.exp(p["b_ald"] * xp.log(AT1))
    return tgf, renin, aldo


def _urine_osmolality(xp, p, ADH):
    ADH = xp.maximum(ADH, 1e-9)
    return p["U_min"] + (p["U_max"] - p["U_min"]) * _sig(xp, p["L_u0"] + p["g_u"] * xp.log(ADH))


# ---------------------------------------------------------- parameter table
_BASE = [
    # hemodynamics
    _p("nephrons", "1", N_REF, "number of functional nephrons (halve for CKD)",
       HALLOW + "; between-person spread of nephron number ~+-40 % (Bertram 2011)", prior_sd=0.4),
    _p("R_pre0", "mmHg*min/L", 19.0, "preafferent (arcuate/interlobular) resistance", HALLOW),
    _p("R_aff0", "mmHg*min/L", 1e-3 * 1.5e-9 / (1.5e-5) ** 4 / N_REF,
       "afferent arteriolar resistance, whole kidney (Poiseuille, diameter 15 um)", HALLOW),
    _p("R_eff0", "mmHg*min/L", 1e-3 * 1.5e-9 / (1.1e-5) ** 4 / N_REF,
       "efferent arteriolar resistance, whole kidney (Poiseuille, diameter 11 um)", HALLOW),
    _p("Hct_r", "1", 0.42, "haematocrit (renal plasma flow)", "typical adult", transform="logit", upper=1.0),
    _p("c_prot_r", "g/dL", 7.0, "plasma protein concentration (glomerular oncotic pressure)", HALLOW),
    _p("P_B", "mmHg", 19.0, "Bowman's space pressure (proximal tubule 14 + interstitium 5)", HALLOW),
    # tubules
    _p("eta_pt0", "1", 0.7, "nominal proximal fractional Na reabsorption", HALLOW, "logit", upper=1.0),
    _p("eta_lh0", "1", 0.8, "nominal loop of Henle fractional Na reabsorption", HALLOW, "logit", upper=1.0),
    _p("eta_dt0", "1", 0.5, "nominal distal tubule fractional Na reabsorption", HALLOW, "logit", upper=1.0),
    _p("k_pn_prox", "1/mmHg", 0.1, "pressure natriuresis in PT and loop: logit fall of reabsorption per mmHg RIHP",
       HALLOW_EQ + "; reduced (a steep proximal effect destabilises the renin-macula densa loop)"),
    _p("k_pn_dist", "1/mmHg", 1.0, "pressure natriuresis in DT and CD: logit fall of reabsorption per mmHg RIHP",
       HALLOW_EQ + "; calibrated to the salt-loading response (salt sensitivity varies between people)",
       prior_sd=0.3),
    _p("b_at1_pt", "1", 0.2, "AT1-AngII effect on proximal reabsorption (logit per ln AT1)", HALLOW_EQ),
    _p("b_aldo", "1", 1.1, "aldosterone effect on collecting-duct reabsorption (logit per ln Aldo)", HALLOW_EQ),
    # TGF
    _p("S_tgf", "1", 0.7, "TGF range of afferent resistance", HALLOW),
    _p("k_tgf", "1", 6.0, "TGF steepness per relative change of macula densa Na delivery",
       HALLOW_EQ + " (delivery instead of concentration)"),
    _p("tau_tgf", "min", 1.0, "TGF time constant (physiologically ~0.5 min; >=0.5 for tractability)", "assumed"),
    # RAAS
    _p("a_pre", "1", 0.30, "AT1-AngII exponent on preafferent resistance", HALLOW_EQ),
    _p("a_aff", "1", 0.30, "AT1-AngII exponent on afferent resistance", HALLOW_EQ),
    _p("a_eff", "1", 0.18, "AT1-AngII exponent on efferent resistance", HALLOW_EQ),
    _p("k_md", "1", 4.0, "renin suppression per relative rise of macula densa Na delivery",
       HALLOW + " (md_renin_tau = 2 per mEq/min); raised to 4: PRA falls ~1/3 on 300 mmol/day"),
    _p("k_pp", "1/mmHg", 0.02, "renin suppression per mmHg of preafferent (baroreceptor) pressure", "assumed"),
    _p("b_fb", "1", -1.2, "AT1-AngII feedback on renin (log-log slope)", HALLOW + " (AT1_PRC_slope)",
       transform="identity", lower=-5.0, upper=0.0),
    _p("b_ald", "1", 0.83, "AT1-AngII exponent on aldosterone secretion", HALLOW + " (AT1_aldo_slope x AT1_0)"),
    _p("t_renin", "min", 10.4, "plasma renin half-life", HALLOW + " (0.1733 h)"),
    _p("t_at1", "min", 12.0, "AT1-bound angiotensin II half-life", HALLOW),
    _p("tau_aldo", "min", 120.0, "aldosterone (genomic) effect time constant", "assumed"),
    # osmoregulation
    _p("C_ref", "mmol/L", 140.0, "reference plasma sodium concentration", HALLOW),
    _p("k_adh", "1", 60.0, "vasopressin sensitivity: ln ADH per relative change of plasma Na",
       "assumed (ADH roughly doubles per 1% osmolality rise; Robertson 1976)"),
    _p("tau_adh", "min", 10.0, "vasopressin time constant (plasma half-life ~10-20 min)", "assumed"),
    _p("U_min", "mmol/kg", 50.0, "minimal urine osmolality", "textbook"),
    _p("U_max", "mmol/kg", 1200.0, "maximal urine osmolality", "textbook"),
    _p("g_u", "1", 1.0, "urine concentrating response (logit per ln ADH)", "assumed"),
    _p("osm_other", "mmol/day", 500.0, "non-sodium urinary osmoles (urea, potassium salts)", "textbook"),
    _p("W0", "mL/min", URINE_NOMINAL * 1000.0 / 1440.0, "nominal net water intake (= urine 1.5 L/day)",
       "textbook; Hallow uses 2.1 L/day gross"),
    _p("g_th", "1", 0.5, "thirst: water intake exponent on ADH", "assumed"),
    # creatinine
    _p("V_cr", "L", 42.0, "creatinine distribution volume (total body water)", "textbook"),
    # glucose
    _p("RTG", "mg/dL", 180.0, "renal threshold for glucose", GLC),
    _p("TmG", "mg/min", 375.0, "maximal tubular glucose reabsorption", GLC),
    _p("s_glc", "mg/min", 5.0, "splay: width of the smooth minima in glucose reabsorption", "assumed"),
    _p("f_sglt1", "1", 0.25, "SGLT1 reserve capacity when SGLT2 is blocked (fraction of cap = GFR RTG)",
       "Vallon & Thomson 2017 Diabetologia 60:215 (residual SGLT1 capacity ~80 g/day = 56 mg/min = 0.26 cap "
       "at GFR 120); Rieg 2014 (SGLT1 reabsorbs 40-50 % of the euglycaemic filtered load, 0.22-0.28 cap); "
       "(1 - Imax + f_sglt1) = 0.50 vs TmG -53 +- 6 % on empagliflozin (Al-Jobori 2017 Diabetes 66:1999)",
       "logit", upper=1.0),
    # SGLT2 inhibitor (empagliflozin)
    _p("ka_sglt2i", "1/min", 0.025, "oral absorption rate (tmax ~1.5 h)", EMPA),
    _p("V_sglt2i", "L", 73.8, "apparent volume of distribution V/F", EMPA),
    _p("CL_sglt2i", "L/min", 10.6 / 60.0, "apparent total clearance CL/F at normal GFR", EMPA),
    _p("fr_sglt2i", "1", 0.3, "renal fraction of clearance (scaled by GFR)", EMPA + " (approx.)", "logit", upper=1.0),
    _p("Imax_sglt2i", "1", 0.75, "maximal SGLT2 inhibition",
       "Koenig et al. empagliflozin model; with f_sglt1 gives TmG -50 % (Al-Jobori 2017: -53 +- 6 % at 48 h)",
       "logit", upper=1.0),
    _p("EC50_sglt2i", "nmol/L", 10.0, "plasma concentration for half-maximal inhibition",
       "assumed: in vitro IC50 3.1 nM x free fraction ~0.14 -> ~20 nM total; near-maximal effect at 10-25 mg/day (Heise 2013)"),
]


def _derive(base: dict) -> dict:
    """Constants fixed by the nominal steady state (numpy, float64)."""
    p = dict(base)
    MAP, Pv, G = NOMINAL_INPUTS["MAP"], NOMINAL_INPUTS["Pv"], NOMINAL_INPUTS["G"]
    RBF0 = 1.0  # L/min, Hallow nom_renal_blood_flow
    p["R_peri0"] = (MAP - Pv) / RBF0 - (p["R_pre0"] + p["R_aff0"] + p["R_eff0"])
    # Kf per nephron so that GFR = GFR_TARGET at the nominal point
    F = (1.0 - p["Hct_r"]) * RBF0 * 1000.0
    Pgc = MAP - RBF0 * (p["R_pre0"] + p["R_aff0"])
    pi_in = _oncotic(p["c_prot_r"])
    dP = Pgc - p["P_B"]
    g = GFR_TARGET
    K = g * (F - g) / (F * (dP - pi_in) - g * (dP - 0.5 * pi_in))
    p["Kf_sn"] = K / (N_REF * 1e-6)
    # placeholders so _kidney can run; the ones it uses are set before use below
    p.update(RIHP0=0.0, cot0=0.0, eta_cd0=0.5)
    k = _kidney(np, p, MAP, Pv, G, p["C_ref"], 1.0, 1.0, 1.0, 0.0)
    p["RIHP0"] = float(k["RIHP"])
    p["cot0"] = float(k["cot"])
    k = _kidney(np, p, MAP, Pv, G, p["C_ref"], 1.0, 1.0, 1.0, 0.0)
    DT_out = float(k["UNa"] / (1.0 - 0.5))  # UNa computed with eta_cd0 = 0.5
    p["eta_cd0"] = 1.0 - NOMINAL_INPUTS["Na_intake"] / 1440.0 / DT_out
    k = _kidney(np, p, MAP, Pv, G, p["C_ref"], 1.0, 1.0, 1.0, 0.0)
    p["MD0"] = float(k["MD"])
    p["P_pre0"] = float(k["P_pre"])
    p["GFR_n"] = float(k["GFR"])
    p["P_cr"] = 0.92 * p["GFR_n"] / 100.0  # mg/min: SCr 0.92 mg/dL at nominal GFR (Hallow)
    osm0 = 2.0 * float(k["UNa"]) + p["osm_other"] / 1440.0 + float(k["UGE"]) / MW_GLUCOSE  # mmol/min
    U0 = osm0 / (p["W0"] / 1000.0)  # mmol/L
    q = (U0 - p["U_min"]) / (p["U_max"] - p["U_min"])
    p["L_u0"] = _logit(q)
    return p


_DERIVED = _derive({q.name: q.value for q in _BASE})

_DERIVED_PARAMS = [
    _p("R_peri0", "mmHg*min/L", _DERIVED["R_peri0"], "peritubular resistance (RBF 1 L/min at MAP 93)", DERIVED),
    _p("Kf_sn", "nL/min/mmHg", _DERIVED["Kf_sn"],
       "single-nephron ultrafiltration coefficient (GFR 120 mL/min; Hallow's 3.9 gives ~95)", DERIVED),
    _p("RIHP0", "mmHg", _DERIVED["RIHP0"], "nominal renal interstitial hydrostatic pressure", DERIVED,
       transform="identity", scope="fixed"),
    _p("eta_cd0", "1", _DERIVED["eta_cd0"], "nominal collecting-duct fractional Na reabsorption (excretion = intake)",
       DERIVED, "logit", upper=1.0, scope="fixed"),
    _p("cot0", "mmol/min", _DERIVED["cot0"], "nominal Na-glucose co-transport", DERIVED, scope="fixed"),
    _p("MD0", "mmol/min", _DERIVED["MD0"], "nominal macula densa Na delivery (TGF and renin set point)", DERIVED,
       scope="fixed"),
    _p("P_pre0", "mmHg", _DERIVED["P_pre0"], "nominal preafferent pressure", DERIVED, transform="identity",
       scope="fixed"),
    _p("GFR_n", "mL/min", _DERIVED["GFR_n"], "normal GFR (relative_gfr = GFR / GFR_n; drug clearance scaling)",
       DERIVED, scope="fixed"),
    _p("P_cr", "mg/min", _DERIVED["P_cr"], "creatinine production (SCr 0.92 mg/dL at normal GFR)",
       HALLOW + "; scales with muscle mass, between-person SD ~20 %", prior_sd=0.2),
    _p("L_u0", "1", _DERIVED["L_u0"], "logit of nominal urine osmolality within [U_min, U_max]", DERIVED,
       transform="identity", lower=-20.0, upper=20.0, scope="fixed"),
]


class Renal(Organ):
    """Reduced Hallow & Gebremichael 2017 kidney with renal glucose handling and SGLT2i."""

    max_step = 0.5  # min: fastest time constants (reflex effectors, TGF) are 0.5-1 min
    shooting_window = 1440.0  # min: sodium and creatinine balance over days; labs and cuff readings are sparse
    name = "renal"
    description = ("reduced Hallow-Gebremichael kidney: GFR, TGF, RAAS, tubular Na, osmoregulation, "
                   "creatinine, glucose reabsorption, empagliflozin")
    reference = "Hallow & Gebremichael, CPT Pharmacometrics Syst Pharmacol 6:383 (2017)"

    states = (
        State("Na", "mmol", "extracellular sodium amount", scale=2000.0),
        State("TGF", "1", "tubuloglomerular feedback multiplier of afferent resistance"),
        State("Renin", "1", "plasma renin concentration, normalised"),
        State("AT1", "1", "AT1-receptor-bound angiotensin II, normalised"),
        State("Aldo", "1", "aldosterone (effect), normalised"),
        State("ADH", "1", "vasopressin, normalised"),
        State("SCr", "mg/dL", "serum creatinine"),
        State("A_gut", "mg", "SGLT2 inhibitor in the gut", scale=10.0),
        State("A_c", "mg", "SGLT2 inhibitor in the central compartment", scale=10.0),
    )

    params = tuple(_BASE + _DERIVED_PARAMS)

    inputs = (
        Input("MAP", "mmHg", NOMINAL_INPUTS["MAP"], "mean arterial pressure", source="cardiovascular.MAP"),
        Input("venous_pressure", "mmHg", NOMINAL_INPUTS["Pv"], "venous (renal outflow) pressure",
              source="cardiovascular.venous_pressure"),
        Input("ECF_volume", "L", NOMINAL_INPUTS["ECF"], "extracellular fluid volume",
              source="cardiovascular.ECF_volume"),
        Input("plasma_glucose", "mg/dL", NOMINAL_INPUTS["G"], "plasma glucose", source="glucose.plasma_glucose"),
        Input("sodium_intake", "mmol/day", NOMINAL_INPUTS["Na_intake"], "dietary sodium intake",
              source="timeline.sodium_intake"),
        Input("sglt2i_dose", "mg/min", 0.0, "oral SGLT2 inhibitor (empagliflozin) into the gut",
              source="timeline.sglt2i"),
    )

    ports = (FluxPort("sodium_loss", "mmol/min", "sodium lost other than in urine (haemorrhage)",
                      pool="body_sodium"),)

    _ALG = ("MAP", "venous_pressure", "ECF_volume", "plasma_glucose")
    outputs = (
        Output("GFR", "mL/min", "glomerular filtration rate", depends_on=_ALG),
        Output("urine_flow", "mL/min", "urine flow", depends_on=_ALG, flux_to="cardiovascular.urine_outflow"),
        Output("water_intake", "mL/min", "water intake (thirst)",
               flux_to="cardiovascular.fluid_intake"),
        Output("sodium_excretion", "mmol/day", "urinary sodium excretion", depends_on=_ALG),
        Output("UGE", "mg/min", "urinary glucose excretion", depends_on=_ALG,
               flux_to="glucose.renal_glucose_excretion"),
        Output("relative_gfr", "1", "GFR relative to normal (scales renal clearances)", depends_on=_ALG),
        Output("serum_creatinine", "mg/dL", "serum creatinine"),
        Output("RBF", "L/min", "renal blood flow", depends_on=_ALG),
        Output("filtration_fraction", "1", "GFR / renal plasma flow", depends_on=_ALG),
        Output("glomerular_pressure", "mmHg", "glomerular capillary hydrostatic pressure", depends_on=_ALG),
        Output("macula_densa_sodium", "mmol/min", "Na delivery to the macula densa", depends_on=_ALG),
        Output("FENa", "1", "fractional sodium excretion", depends_on=_ALG),
        Output("plasma_sodium", "mmol/L", "plasma (ECF) sodium concentration", depends_on=("ECF_volume",)),
        Output("urine_osmolality", "mmol/kg", "urine osmolality"),
        Output("filtered_glucose", "mg/min", "filtered glucose load", depends_on=_ALG),
        Output("renin", "1", "plasma renin, normalised"),
        Output("aldosterone", "1", "aldosterone, normalised"),
        Output("sglt2i_concentration", "nmol/L", "plasma SGLT2 inhibitor concentration"),
        Output("sglt2_inhibition", "1", "fractional SGLT2 inhibition"),
    )

    # identifiable from cuff pressure and laboratory creatinine (with the population prior): the
    # functional nephron mass (filtration and the pressure at which sodium balance holds), the
    # steepness of pressure natriuresis (salt sensitivity) and creatinine production
    calibrated = ("nephrons", "k_pn_dist", "P_cr")

    # where a hybrid may learn what the reduced kidney misses: sodium handling the tubular
    # model does not explain (hormones outside RAAS, diurnal excretion), added to the sodium
    # balance; it sees the body's sodium, filtration and excretion
    residuals = (
        Residual("sodium_handling", "Na", 0.02, ("Na", "GFR", "sodium_excretion", "plasma_sodium"),
                 "unmodelled renal sodium handling (mmol/min)"),
    )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _drug(p, x):
        C_mgL = x["A_c"] / p["V_sglt2i"]
        C_nM = C_mgL * 1e6 / MW_EMPA
        C_pos = jnp.maximum(C_nM, 0.0)
        I = p["Imax_sglt2i"] * C_pos / (C_pos + p["EC50_sglt2i"])
        return C_nM, I

    def initial_state(self, p, u):
        MAP, Pv, G = u["MAP"], u["venous_pressure"], u["plasma_glucose"]
        C = p["C_ref"]
        one = 1.0 + 0.0 * p["C_ref"]
        # regulators: damped fixed-point iteration towards their steady state for these
        # inputs (exactly 1 at the nominal inputs; a few % off nominal converge quickly)
        def step(_, reg):
            tgf, renin = reg
            aldo = jnp.exp(p["b_ald"] * jnp.log(jnp.maximum(renin, 1e-6)))
            k = _kidney(jnp, p, MAP, Pv, G, C, tgf, renin, aldo, 0.0)
            t_tgf, t_ren, _ = _regulator_targets(jnp, p, k, renin)
            return tgf + 0.4 * (t_tgf - tgf), renin + 0.4 * (t_ren - renin)

        tgf, renin = jax.lax.fori_loop(0, 30, step, (one, one))
        aldo = jnp.exp(p["b_ald"] * jnp.log(jnp.maximum(renin, 1e-6)))
        k = _kidney(jnp, p, MAP, Pv, G, C, tgf, renin, aldo, 0.0)
        return {"Na": C * u["ECF_volume"], "TGF": tgf, "Renin": renin, "AT1": renin, "Aldo": aldo,
                "ADH": one, "SCr": 100.0 * p["P_cr"] / k["GFR"], "A_gut": 0.0 * one, "A_c": 0.0 * one}

    def rhs(self, t, x, p, u):
        ECF = jnp.maximum(u["ECF_volume"], 1e-3)
        C_Na = x["Na"] / ECF
        C_nM, I = self._drug(p, x)
        k = _kidney(jnp, p, u["MAP"], u["venous_pressure"], u["plasma_glucose"], C_Na,
                    x["TGF"], x["AT1"], x["Aldo"], I)

        # --- TGF and RAAS
        t_tgf, t_ren, t_aldo = _regulator_targets(jnp, p, k, x["AT1"])
        dTGF = (t_tgf - x["TGF"]) / p["tau_tgf"]
        dRenin = math.log(2.0) / p["t_renin"] * (t_ren - x["Renin"])
        dAT1 = math.log(2.0) / p["t_at1"] * (x["Renin"] - x["AT1"])
        dAldo = (t_aldo - x["Aldo"]) / p["tau_aldo"]

        # --- osmoregulation and water
        ADH = jnp.maximum(x["ADH"], 1e-9)
        dADH = (jnp.exp(_sat(jnp, p["k_adh"] * (C_Na / p["C_ref"] - 1.0))) - x["ADH"]) / p["tau_adh"]
        U_osm = _urine_osmolality(jnp, p, ADH)
        osm = 2.0 * k["UNa"] + p["osm_other"] / 1440.0 + k["UGE"] / MW_GLUCOSE  # mmol/min
        urine = 1000.0 * osm / U_osm  # mL/min
        intake = p["W0"] * jnp.exp(p["g_th"] * jnp.log(ADH))

        # --- sodium balance
        dNa = u["sodium_intake"] / 1440.0 - k["UNa"] - u["sodium_loss"]

        # --- creatinine (GFR mL/min * SCr mg/dL / 100 = mg/min; V_cr in dL)
        dSCr = (p["P_cr"] - k["GFR"] * x["SCr"] / 100.0) / (10.0 * p["V_cr"])

        # --- SGLT2 inhibitor PK
        CL = p["CL_sglt2i"] * ((1.0 - p["fr_sglt2i"]) + p["fr_sglt2i"] * k["GFR"] / p["GFR_n"])
        dA_gut = u["sglt2i_dose"] - p["ka_sglt2i"] * x["A_gut"]
        dA_c = p["ka_sglt2i"] * x["A_gut"] - CL / p["V_sglt2i"] * x["A_c"]

        dx = {"Na": dNa, "TGF": dTGF, "Renin": dRenin, "AT1": dAT1, "Aldo": dAldo, "ADH": dADH,
              "SCr": dSCr, "A_gut": dA_gut, "A_c": dA_c}
        y = {
            "GFR": k["GFR"],
            "urine_flow": urine,
            "water_intake": intake,
            "sodium_excretion": 1440.0 * k["UNa"],
            "UGE": k["UGE"],
            "relative_gfr": k["GFR"] / p["GFR_n"],
            "serum_creatinine": x["SCr"],
            "RBF": k["RBF"],
            "filtration_fraction": k["GFR"] / k["RPF"],
            "glomerular_pressure": k["Pgc"],
            "macula_densa_sodium": k["MD"],
            "FENa": k["UNa"] / k["FLNa"],
            "plasma_sodium": C_Na,
            "urine_osmolality": U_osm,
            "filtered_glucose": k["FLG"],
            "renin": x["Renin"],
            "aldosterone": x["Aldo"],
            "sglt2i_concentration": C_nM,
            "sglt2_inhibition": I,
        }
        return dx, y


@hookimpl
def register_organs(register):
    register(Renal)
