"""Reports of a record and its twin for people (``physiotwin report``).

A `Report` (registered by a plugin through ``register_reports``) turns a record, and
optionally its twin, into `ReportSection` objects: headings, short HTML text, tables
and matplotlib figures. This module is generic: it picks the reports that apply to the
record's observation kinds and renders the sections as one self-contained HTML page,
a PDF or a PNG.

```python
from physiotwin.plausibility import read_record
from physiotwin.registry import reports
from physiotwin.report import make_report
make_report(read_record("record.csv"), "report.html", reports(), extras={"forecast": "fc.nc"})
```

Output formats, chosen by the suffix of the output path (`FORMATS`):

- ``.html``: one page with no external resource: inline CSS, figures as inline SVG
  (each ``<figure>`` carries the id of the matplotlib figure's label), tables as HTML
  tables (``id="<section anchor>-table"``), and a header naming the record file, its
  date range, the twin and result files, the physiotwin version and the time it was made;
- ``.pdf``: a page for each section's text and table, then a page for each figure;
- ``.png``: the first section (header, text, table and figures) as one image.

The output is written atomically (`physiotwin.io.atomic_path`): a complete file or none.
Input problems raise `ReportError` (or the reader's own `PhysiotwinError`) before
anything is written.
"""

from __future__ import annotations

import html as html_lib
import io
import re
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .errors import PhysiotwinError

__all__ = ["Report", "ReportSection", "ReportInput", "ReportError", "FORMATS", "applicable", "check_output",
           "make_report", "render_html", "record_span"]

FORMATS = (".html", ".pdf", ".png")
_PAGE_WIDTH = 8.27  # in: A4 portrait
_PAGE_HEIGHT = 11.69
_DPI = 110


class ReportError(PhysiotwinError, ValueError):
    """A report that cannot be made: an unknown output format, no report for the record's
    kinds, an unreadable result file. One line naming the file."""


@dataclass(frozen=True)
class ReportSection:
    """One section of a report: a title, trusted HTML text, an optional table
    (a pandas DataFrame, shown as it is: format numbers as strings), matplotlib
    figures, and an `anchor` (the section's HTML id; default: from the title)."""

    title: str
    html: str = ""
    table: Any = None
    figures: tuple = ()
    anchor: str = ""

    @property
    def key(self) -> str:
        """The section's id: `anchor`, or the title in lowercase with dashes."""
        return self.anchor or re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


@dataclass
class ReportInput:
    """What a report gets: the record (a checked `Timeline`), its file name, and when
    given the twin (`physiotwin.calibration.Twin`) and result datasets (``extras``:
    ``{"forecast": xarray.Dataset, "whatif": xarray.Dataset}``, as ``physiotwin forecast``
    and ``physiotwin whatif`` write them)."""

    record: Any
    source: str
    twin: Any = None
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    """A report on records holding any of the observation kinds ``kinds``:
    ``sections(ReportInput) -> [ReportSection, ...]``."""

    name: str
    description: str
    kinds: tuple[str, ...]
    sections: Callable[[ReportInput], Sequence[ReportSection]]

    def check(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"report name {self.name!r} must be a Python identifier")


# ----------------------------------------------------------------- choosing
def applicable(record, reports: Mapping[str, Report]) -> list[Report]:
    """The ``reports`` (``{name: Report}``, e.g. `physiotwin.registry.reports()`) for which
    ``record`` holds one of their kinds, in their order; `ReportError` naming the kinds
    when none applies."""
    held = sorted({str(k) for k in record.kind})
    chosen = [r for r in reports.values() if set(r.kinds) & set(held)]
    if not chosen:
        wanted = "; ".join(f"{r.name}: {', '.join(r.kinds)}" for r in reports.values()) or "no report is installed"
        raise ReportError(f"{record.source}: no report applies to the kinds it holds ({', '.join(held) or 'none'}); "
                          f"the installed reports need ({wanted})")
    return chosen


def record_span(record) -> tuple[datetime | None, datetime | None, float]:
    """(first, last event as clock times or None when the record has no start, length in minutes)."""
    if not len(record):
        return record.start, record.start, 0.0
    t0, t1 = float(record.time.min()), float(record.time.max())
    if record.start is None:
        return None, None, t1 - t0
    return record.start + timedelta(minutes=t0), record.start + timedelta(minutes=t1), t1 - t0


# ----------------------------------------------------------------- making
def _load_extras(extras: Mapping[str, Any]) -> dict:
    import xarray as xr

    out = {}
    for name, value in (extras or {}).items():
        if value is None:
            continue
        if isinstance(value, xr.Dataset):
            out[name] = value
            continue
        try:
            with xr.open_dataset(value) as ds:
                out[name] = ds.load()
        except (OSError, ValueError, TypeError) as err:
            raise ReportError(f"{value}: cannot read the {name} result file (a NetCDF file as `physiotwin {name}` "
                              f"writes): {_one_line(err)[:120]}") from None
    return out


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def check_output(out) -> Path:
    """``out`` as a Path, once its format (suffix, `FORMATS`) and folder are checked
    (`ReportError`, `physiotwin.io.OutputError`): call it before any long computation."""
    from .io import check_writable

    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ReportError(f"{out}: unknown report format {out.suffix or '(no suffix)'!r}; use "
                          f"{', '.join(FORMATS)}")
    return check_writable(out, "report")


def make_report(record, out, reports: Mapping[str, Report], *, twin=None, twin_source: str = "",
                extras: Mapping[str, Any] | None = None, title: str | None = None) -> Path:
    """Write the report of ``record`` (a checked `Timeline`, as
    `physiotwin.plausibility.read_record` gives it) to ``out`` (format by suffix, `FORMATS`).

    Arguments:
        reports: the reports to choose from (``{name: Report}``; the installed ones are
        `physiotwin.registry.reports()`). twin: a loaded twin (optional), from the
        directory ``twin_source`` (named in the header). extras: result files (paths) or
        Datasets by name (``forecast``, ``whatif``: see `ReportInput`). title: the page
        title (default: from the record's file name).

    Returns the path written. Raises `ReportError` (format, kinds, result files) or
    `physiotwin.io.OutputError` (output path), before anything is written."""
    out = check_output(out)
    chosen = applicable(record, reports)
    extras = {k: v for k, v in (extras or {}).items() if v is not None}
    data = ReportInput(record, Path(str(record.source)).name, twin, _load_extras(extras))
    meta = _header(data, title, twin_source, extras)
    sections = [s for r in chosen for s in r.sections(data)]
    try:
        _write(sections, meta, out, out.suffix.lower())
    finally:
        _close(sections)
    return out


def _header(data: ReportInput, title: str | None, twin: str, extras: Mapping[str, Any]) -> dict:
    from . import __version__

    first, last, minutes = record_span(data.record)
    if first is not None:
        dates = f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} ({minutes / 1440:.1f} days)"
    else:
        dates = f"minutes 0 to {minutes:.0f} ({minutes / 1440:.1f} days; no clock times)"
    rows = {"record": data.source, "dates": dates}
    if data.twin is not None:
        rows["twin"] = str(twin) or repr(data.twin)
    for name, value in extras.items():
        rows[name] = Path(str(value)).name if isinstance(value, (str, Path)) else "(dataset)"
    rows["made"] = f"{datetime.now().astimezone():%Y-%m-%d %H:%M %Z} with physiotwin {__version__}"
    return {"title": title or f"Report: {data.source}", "rows": rows}


def _write(sections: Sequence[ReportSection], meta: dict, out: Path, fmt: str) -> None:
    from .io import atomic_path

    with atomic_path(out, fmt) as tmp:
        if fmt == ".html":
            Path(tmp).write_text(render_html(sections, meta), encoding="utf-8")
        elif fmt == ".pdf":
            _render_pdf(sections, meta, tmp)
        else:
            _render_png(sections, meta, tmp)


def _close(sections: Sequence[ReportSection]) -> None:
    import matplotlib.pyplot as plt

    for s in sections:
        for fig in s.figures:
            plt.close(fig)


# ----------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;max-width:1100px;
padding:16px 24px;color:#222;background:#fff}
header{border-bottom:2px solid #444;margin-bottom:12px}h1{font-size:1.5em;margin:0.2em 0}
header dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:0.9em;margin:6px 0 10px}
header dt{font-weight:600;color:#555}header dd{margin:0}
nav{font-size:0.9em;margin-bottom:10px}nav a{margin-right:12px}
section{margin:18px 0;page-break-inside:avoid}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:2px}
table.report-table{border-collapse:collapse;font-size:0.9em;margin:8px 0}
table.report-table th,table.report-table td{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.report-table th{background:#f3f3f3}table.report-table td:first-child{text-align:left}
figure{margin:8px 0}figure svg{max-width:100%;height:auto}p.note{color:#555;font-size:0.9em}
"""


def render_html(sections: Sequence[ReportSection], meta: dict) -> str:
    """One self-contained HTML page of ``sections`` (``meta``: ``title`` and header ``rows``)."""
    esc = html_lib.escape
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in meta["rows"].items())
    nav = " ".join(f'<a href="#{esc(s.key)}">{esc(s.title)}</a>' for s in sections)
    body = [f"<header><h1>{esc(meta['title'])}</h1><dl>{rows}</dl></header>", f"<nav>{nav}</nav>"]
    n = 0
    for s in sections:
        parts = [f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>', s.html]
        if s.table is not None:
            parts.append(s.table.to_html(index=False, table_id=f"{s.key}-table", classes="report-table",
                                         border=0, na_rep="–"))
        for i, fig in enumerate(s.figures):
            n += 1
            name = fig.get_label() or f"{s.key}-figure-{i + 1}"
            if name == s.key:  # ids are unique in a page: the figure yields to its section
                name = f"{name}-figure"
            parts.append(f'<figure id="{esc(name)}">{_svg(fig, f"f{n}-")}</figure>')
        body.append("".join(parts) + "</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"generator\" content=\"physiotwin\"><title>{esc(meta['title'])}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _svg(fig, prefix: str) -> str:
    """The figure as inline SVG, its ids prefixed (several SVGs share one page)."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "physiotwin"}):
        fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r'\bid="', f'id="{prefix}', text)
    text = re.sub(r"url\(#", f"url(#{prefix}", text)
    return re.sub(r'href="#', f'href="#{prefix}', text)


# ----------------------------------------------------------------- PDF and PNG
def _plain(html: str) -> list[str]:
    """Paragraphs of trusted HTML as plain text lines, wrapped for a page."""
    text = re.sub(r"</p>|<br\s*/?>|</li>|</h\d>", "\n", html)
    text = html_lib.unescape(re.sub(r"<[^>]+>", "", text))
    lines = []
    for para in text.split("\n"):
        para = " ".join(para.split())
        if para:
            lines.extend(textwrap.wrap(para, 105))
    return lines


def _text_page(section: ReportSection | None, meta: dict | None):
    """A figure of the header (when ``meta``), a section's title, text and table, sized to them."""
    import matplotlib.pyplot as plt

    lines = []
    if meta is not None:
        lines += [("h1", meta["title"])] + [("p", f"{k}: {v}") for k, v in meta["rows"].items()] + [("p", "")]
    if section is not None:
        lines += [("h2", section.title)] + [("p", t) for t in _plain(section.html)]
    table = None if section is None else section.table
    rows = 0 if table is None else len(table) + 1
    height = 0.6 + 0.2 * len(lines) + 0.2 * rows
    fig = plt.figure(figsize=(_PAGE_WIDTH, height))
    y = 1.0 - 0.3 / height
    for style, text in lines:
        size = {"h1": 14, "h2": 12}.get(style, 8)
        fig.text(0.06, y, text, fontsize=size, va="top", weight="bold" if style != "p" else "normal")
        y -= 0.2 / height
    if table is not None:
        _draw_table(fig.add_axes((0.06, 0.15 / height, 0.88, 0.2 * rows / height)), table)
    return fig


def _draw_table(ax, table) -> None:
    """A DataFrame as a matplotlib table filling ``ax``, columns as wide as their text."""
    ax.axis("off")
    cells = table.astype(str).replace({"nan": "–"}).values
    labels = [str(c) for c in table.columns]
    widths = [max([len(labels[j])] + [len(str(c)) for c in cells[:, j]]) + 2 for j in range(len(labels))]
    tab = ax.table(cellText=cells, colLabels=labels, colWidths=[w / sum(widths) for w in widths],
                   bbox=(0.0, 0.0, min(1.0, sum(widths) / 110.0), 1.0), cellLoc="right")
    tab.auto_set_font_size(False)
    tab.set_fontsize(7.5)
    for (row, col), cell in tab.get_celld().items():
        cell.set_linewidth(0.4)
        if col == 0:
            cell.set_text_props(ha="left")
        if row == 0:
            cell.set_facecolor("#eeeeee")


def _render_pdf(sections: Sequence[ReportSection], meta: dict, path: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    info = {"Title": meta["title"], "Creator": meta["rows"].get("made", "physiotwin")}
    with PdfPages(path, metadata=info) as pdf:
        for i, s in enumerate(sections):
            page = _text_page(s, meta if i == 0 else None)
            pdf.savefig(page)
            plt.close(page)
            for fig in s.figures:
                pdf.savefig(fig, bbox_inches="tight")


def _render_png(sections: Sequence[ReportSection], meta: dict, path: str) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    first = sections[0] if sections else None
    page = _text_page(first, meta)
    images = [_pixels(page)]
    plt.close(page)
    images += [_pixels(fig) for fig in (first.figures if first else ())]
    width = max(im.shape[1] for im in images)
    padded = [np.pad(im, ((0, 0), (0, width - im.shape[1]), (0, 0)), constant_values=1.0) for im in images]
    plt.imsave(path, np.concatenate(padded, axis=0), format="png")


def _pixels(fig):
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, facecolor="white")
    buf.seek(0)
    image = plt.imread(buf, format="png")
    return image[..., :3] if image.shape[-1] == 4 else image
