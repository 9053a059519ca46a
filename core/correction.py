"""Input corrections: unknowns about logged inputs that a calibration fits with the twin.

Logs are wrong in known ways (an amount under-counted, a level misreported). An input
correction gives every logged event of one timeline kind an unknown multiplicative
factor ``exp(c)`` with prior ``c ~ N(0, prior_sd^2)``, applied to the signals that
event feeds while it acts. A plugin registers one through ``register_corrections``
and says, minute by minute, which event acts (`InputCorrection.events`). A calibration
fits the corrections whose kind appears in the record and whose signals the
composition reads; a twin keeps them, so a replay of the record keeps what
calibration learnt about each event.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import numpy as np

__all__ = ["InputCorrection", "level_events"]


class InputCorrection(eqx.Module):
    """Base class of input corrections (see the module docstring).

    Class attributes:
        name: registry name. kind: the timeline kind whose logged events are corrected.
        signals: the signals (without ``timeline.``) each event's factor scales.
        prior_sd: SD of the log factor ``c``. description: one line.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    signals: ClassVar[tuple[str, ...]]
    prior_sd: ClassVar[float] = 0.3
    description: ClassVar[str] = ""

    @abc.abstractmethod
    def events(self, tl: "Timeline", minutes: int) -> tuple[np.ndarray, int]:
        """``(index[minutes], n)``: the event (0..n-1) whose factor applies during each
        minute ``[k, k+1)`` (-1 for none), and how many events there are."""


def level_events(tl: "Timeline", kind: str, minutes: int) -> tuple[np.ndarray, int]:
    """`InputCorrection.events` of a level kind: the row in force at the middle of each minute."""
    ev = tl.select(kind)
    mid = np.arange(minutes) + 0.5
    index = np.searchsorted(ev.time, mid, side="right") - 1
    return index.astype(np.int32), len(ev)
