"""Validation studies: a composition's behaviour beside the literature, side by side.

Plugins register studies (``register_validation_studies``); each simulates the
situations a physiologist checks first and returns one `physiotwin.Check` per
quantity: model value, expected range, source. Run them as

    python -m physiotwin.validation [--study NAME] [--figures DIR] [--markdown FILE]

which prints the table, draws each study's figures when asked, and exits 1 when a
value falls outside its range (or a study's run is flagged by the solver).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .extensions import Check

__all__ = ["run", "markdown", "main", "Check"]


def run(figures: Path | None = None, study: str | None = None) -> list[Check]:
    """The checks of every registered study (or of ``study``), drawing figures into ``figures``."""
    from .registry import validation_studies

    studies = validation_studies()
    if study is not None and study not in studies:
        raise KeyError(f"unknown validation study {study!r}; registered: {', '.join(studies) or 'none'}")
    checks: list[Check] = []
    for name, s in studies.items():
        if study is None or name == study:
            checks.extend(s.run(None if figures is None else Path(figures)))
    return checks


def markdown(checks: list[Check]) -> str:
    head = "| situation | quantity | model | expected | within | source |\n|---|---|---|---|---|---|"
    return head + "\n" + "\n".join(c.row() for c in checks)


def main(argv=None) -> int:
    import jax

    from .errors import PhysiotwinError

    jax.config.update("jax_enable_x64", True)
    ap = argparse.ArgumentParser(description="validation studies of the installed plugins against the literature")
    ap.add_argument("--study", help="run only this study")
    ap.add_argument("--figures", type=Path, help="folder for the studies' figures")
    ap.add_argument("--markdown", type=Path, help="also write the table as Markdown")
    args = ap.parse_args(argv)
    try:
        checks = run(args.figures, args.study)
    except (PhysiotwinError, KeyError) as err:
        print(f"error: {err}")
        return 1
    table = markdown(checks)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    failed = [c for c in checks if not c.passed]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks within the literature range")
    return 1 if failed or not checks else 0


if __name__ == "__main__":
    raise SystemExit(main())
