"""The PHYSIOLOGY.md validation table, reproduced by the composed glucose,
cardiovascular and renal organs (physiotwin.validation; docs/validation.md)."""

from __future__ import annotations

import pytest

from physiotwin import validation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checks():
    return validation.run()


def test_every_row_of_the_validation_table_is_within_the_literature_range(checks):
    print("\n" + validation.markdown(checks))
    assert len(checks) >= 20
    failed = [f"{c.situation}: {c.quantity} = {c.value:.4g} {c.unit}, expected {c.low:g}-{c.high:g}"
              for c in checks if not c.passed]
    assert not failed, failed


def test_table_covers_every_situation(checks):
    situations = " ".join(c.situation for c in checks)
    for words in ("baseline", "sodium intake", "glucose 300", "SGLT2i", "GFR halved", "exercise", "blood loss"):
        assert words in situations
