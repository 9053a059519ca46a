"""The errors physiotwin raises for problems a user can fix.

Every one derives from `PhysiotwinError`, so a program (the CLI among them) can
tell the package's own, expected failures (a bad file, a wiring mistake, an
unusable record) from bugs. Each message is one line that names what is wrong and
where: the file, row and field, the organ and port, the plugin, the parameter.
"""

from __future__ import annotations

__all__ = ["PhysiotwinError", "WiringError", "PluginError", "UnitError", "TimelineError", "PatientError",
           "SimulationError", "ObservationError", "CalibrationError", "TwinError", "OutputError",
           "RecordError", "ImportFileError"]


class PhysiotwinError(Exception):
    """Base class of every error a user can act on."""


class WiringError(PhysiotwinError, ValueError):
    """A composition that cannot be built; the message names organs and ports."""


class PluginError(PhysiotwinError, RuntimeError):
    """A plugin that registers something invalid or already taken, or implements an unknown hook."""


class UnitError(PhysiotwinError, ValueError):
    """A unit string that cannot be parsed, or two units that cannot be converted."""


class TimelineError(PhysiotwinError, ValueError):
    """A problem in a timeline; the message is one line naming file, row and field.

    The parts are also available as attributes `source`, `row` and `field`
    (`None` for file-level problems).
    """

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 field: str | None = None):
        super().__init__(message)
        self.source, self.row, self.field = source, row, field


class PatientError(PhysiotwinError, ValueError):
    """A patient name or table that cannot be used; the message names it."""


class SimulationError(PhysiotwinError, ValueError):
    """Invalid simulation request (duration, output interval, x64 off)."""


class ObservationError(PhysiotwinError, ValueError):
    """Observations that cannot be explained by a composition; names the kind, model and organs."""


class CalibrationError(PhysiotwinError, ValueError):
    """A calibration that cannot run with the given record, organs or options, or that failed."""


class TwinError(PhysiotwinError, ValueError):
    """A twin directory that cannot be loaded or used; names the file."""


class OutputError(PhysiotwinError, OSError):
    """An output path that cannot be written."""


class RecordError(TimelineError):
    """A record that fails a plausibility check (implausible values, conflicting duplicates, a
    clock that goes back); the message names the file, row and field."""


class ImportFileError(PhysiotwinError, ValueError):
    """A device export that cannot be imported; one line naming the file, row and column.

    The parts are also available as attributes `source`, `row` and `column`."""

    def __init__(self, message: str, *, source: str | None = None, row: int | None = None,
                 column: str | None = None):
        super().__init__(message)
        self.source, self.row, self.column = source, row, column
