"""Built-in timeline kinds: ``carbs``, ``bolus``, ``basal``, ``cgm``, ``sodium_intake``,
``exercise``, ``blood_loss`` and ``sglt2i``, and the ground-truth kinds of simulated
records (`physiotwin.calibration.synthetic`): ``cgm_true``, ``bg`` and ``carbs_true``.

They are registered through the same `register_timeline_kinds` hook as kinds from
third-party plugins; `physiotwin.timeline` also uses `BUILTIN_KINDS` directly when
no kinds are passed to `read_timeline`.
"""

from __future__ import annotations

from physiotwin.plugins import hookimpl
from physiotwin.timeline import TimelineKind

__all__ = ["BUILTIN_KINDS", "register_timeline_kinds"]

BUILTIN_KINDS: dict[str, TimelineKind] = {
    kind.name: kind
    for kind in (
        TimelineKind(
            name="carbs",
            unit="g",
            description="carbohydrate eaten; at 5 g/min unless a duration is given",
        ),
        TimelineKind(
            name="bolus",
            unit="U",
            description="insulin bolus, delivered evenly over `duration` minutes (default 1)",
        ),
        TimelineKind(
            name="basal",
            unit="U/h",
            duration="forbidden",
            description=(
                "basal insulin rate, piecewise constant from this time on; "
                "the patient's steady-state basal when absent"
            ),
        ),
        TimelineKind(
            name="cgm",
            unit="mg/dL",
            unit_context="glucose",
            observation=True,
            duration="forbidden",
            description="continuous glucose monitor reading (observation; not used by simulate)",
        ),
        TimelineKind(
            name="sodium_intake",
            unit="mmol/day",
            unit_context="sodium",
            duration="forbidden",
            description="dietary sodium intake, piecewise constant from this time on (100 mmol/day when absent)",
        ),
        TimelineKind(
            name="exercise",
            unit="1",
            maximum=1.0,
            duration="required",
            description="exercise intensity as a fraction 0-1 of heart-rate reserve, for `duration` minutes",
        ),
        TimelineKind(
            name="blood_loss",
            unit="mL",
            duration="required",
            description="blood lost evenly over `duration` minutes",
        ),
        TimelineKind(
            name="sglt2i",
            unit="mg",
            duration="forbidden",
            description="oral dose of the SGLT2 inhibitor empagliflozin",
        ),
        # Ground truth, present only in simulated records (physiotwin.calibration.synthetic);
        # observations, so no simulation reads them as inputs.
        TimelineKind(
            name="cgm_true",
            unit="mg/dL",
            unit_context="glucose",
            observation=True,
            duration="forbidden",
            description=(
                "noise-free sensor (subcutaneous) glucose at a CGM sample time; "
                "ground truth available in simulated records only"
            ),
        ),
        TimelineKind(
            name="bg",
            unit="mg/dL",
            unit_context="glucose",
            observation=True,
            duration="forbidden",
            description="true plasma glucose; ground truth available in simulated records only",
        ),
        TimelineKind(
            name="carbs_true",
            unit="g",
            observation=True,
            description=(
                "carbohydrate actually eaten (the `carbs` rows are what was logged); "
                "ground truth available in simulated records only"
            ),
        ),
    )
}


@hookimpl
def register_timeline_kinds(register):
    """Register the built-in kinds."""
    for kind in BUILTIN_KINDS.values():
        register(kind)
