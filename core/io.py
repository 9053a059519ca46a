"""Files out: NetCDF results and plots, written atomically.

An output file either appears complete or not at all: everything is written to a
temporary file in the destination folder and moved into place at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import OutputError

__all__ = ["OutputError", "check_writable", "write_netcdf", "plot_timeseries", "atomic_write_text", "atomic_path"]


def check_writable(path: str | Path, what: str = "output") -> Path:
    """Fail early, before any computation, when ``path`` cannot be written."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a directory")
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{what} {path}: folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path}: file is not writable")
    return path


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a complete file or none)."""
    path = check_writable(path)
    with atomic_path(path, ".part") as tmp:
        Path(tmp).write_text(text)
    return path


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to NetCDF-4 atomically."""
    path = check_writable(path)
    encoding = {name: {"zlib": True, "complevel": 4} for name, v in ds.data_vars.items() if v.dtype.kind == "f"}
    with atomic_path(path, ".nc") as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return path


def plot_timeseries(ds: xr.Dataset, path: str | Path, panels: Sequence[tuple[str, tuple[float, float] | None]] = (),
                    title: str | None = None) -> Path:
    """Plot variables of every patient against time to a PNG, one panel per ``(variable,
    band)`` (``band``: a reference range shaded on the panel, or None); without panels,
    the first three time series of the dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_writable(path, "plot")
    hours = ds["time"].values / 60.0
    panels = [(v, band) for v, band in panels if v in ds] or [
        (v, None) for v in ds.data_vars if ds[v].dims and ds[v].dims[-1] == "time"][:3]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True, squeeze=False)
    patients = list(np.atleast_1d(ds["patient"].values))
    for ax, (name, band) in zip(axes[:, 0], panels):
        values = np.atleast_2d(ds[name].values)
        for label, row in zip(patients, values):
            ax.plot(hours, row, lw=1.2, label=str(label))
        if band is not None:
            ax.axhspan(band[0], band[1], color="tab:green", alpha=0.08, lw=0)
        ax.set_ylabel(f"{ds[name].attrs.get('long_name', name).split(',')[0]}\n[{ds[name].attrs.get('units', '')}]",
                      fontsize=8)
        ax.grid(alpha=0.3)
    if len(patients) <= 10:
        axes[0, 0].legend(fontsize=7, ncol=min(5, len(patients)))
    axes[-1, 0].set_xlabel("time [h]")
    return _save(fig, path, title or f"physiotwin: {ds.attrs.get('organs', '')}")


def _save(fig, path: Path, title: str) -> Path:
    """Title, lay out and write a figure as PNG atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def plot_replay(ds: xr.Dataset, path: str | Path, kinds: Sequence[str],
                bands: Mapping[str, tuple[float, float] | None] | None = None, title: str | None = None) -> Path:
    """Plot a what-if Dataset (`physiotwin.calibration.whatif`) to a PNG: per kind, the
    replayed record (grey), the new timeline (blue) and, when drawn, its 5-95 % and
    25-75 % bands; ``bands``: a reference range per kind, shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_writable(path, "plot")
    hours = ds["time"].values / 60.0
    kinds = [k for k in kinds if k in ds]
    fig, axes = plt.subplots(len(kinds), 1, figsize=(10, 3.0 * len(kinds)), sharex=True, squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        if f"{kind}_quantiles" in ds:
            q = ds[f"{kind}_quantiles"].values
            ax.fill_between(hours, q[0], q[-1], color="tab:blue", alpha=0.15, lw=0, label="5-95 %")
            ax.fill_between(hours, q[1], q[-2], color="tab:blue", alpha=0.25, lw=0, label="25-75 %")
        ax.plot(hours, ds[f"{kind}_original"].values, color="0.45", lw=1.0, label="record (replayed)")
        ax.plot(hours, ds[kind].values, color="tab:blue", lw=1.2, label="what if")
        _kind_panel(ax, ds, kind, (bands or {}).get(kind))
    axes[-1, 0].set_xlabel("time since the record's start [h]")
    return _save(fig, path, title or f"physiotwin what-if: {Path(str(ds.attrs.get('timeline', ''))).name}")


def _kind_panel(ax, ds: xr.Dataset, kind: str, band: tuple[float, float] | None) -> None:
    """Reference band, label, grid and legend of one kind's panel."""
    if band is not None:
        ax.axhspan(band[0], band[1], color="tab:green", alpha=0.08, lw=0)
    ax.set_ylabel(f"{kind}\n[{ds[kind].attrs.get('units', '')}]", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper right")


def plot_forecast(ds: xr.Dataset, path: str | Path, kinds: Sequence[str],
                  bands: Mapping[str, tuple[float, float] | None] | None = None, title: str | None = None) -> Path:
    """Plot a forecast Dataset (`Twin.forecast`) to a PNG: per kind, the readings recorded
    (dots) and, per horizon, the forecast made that many minutes before each of them
    (lines), with its 90 % band when the dataset has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_writable(path, "plot")
    kinds = [k for k in kinds if k in ds]
    horizons = ds["horizon"].values
    fig, axes = plt.subplots(len(kinds), 1, figsize=(10, 3.0 * len(kinds)), sharex=True, squeeze=False)
    for ax, kind in zip(axes[:, 0], kinds):
        for j, h in enumerate(horizons):
            at = (ds["origin"].values + h) / 60.0
            line, = ax.plot(at, ds[kind].values[:, j], lw=1.1, label=f"forecast {h:g} min ahead")
            if f"{kind}_lower" in ds:
                ax.fill_between(at, ds[f"{kind}_lower"].values[:, j], ds[f"{kind}_upper"].values[:, j],
                                color=line.get_color(), alpha=0.12, lw=0)
            if f"{kind}_observed" in ds and j == 0:
                ax.plot(at, ds[f"{kind}_observed"].values[:, j], ".", color="k", ms=2.5, label="recorded")
        _kind_panel(ax, ds, kind, (bands or {}).get(kind))
    axes[-1, 0].set_xlabel("time since the record's start [h]")
    return _save(fig, path, title or f"physiotwin forecast ({ds.attrs.get('variant', '')}): "
                                     f"{Path(str(ds.attrs.get('record', ''))).name}")


def plot_scores(table, path: str | Path, column: str = "rmse", title: str | None = None) -> Path:
    """Plot an evaluation table (`physiotwin.calibration.evaluate`) to a PNG: per kind, the
    ``column`` score of every model against the forecast horizon."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_writable(path, "plot")
    kinds = list(dict.fromkeys(table["kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.0 * len(kinds), 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = table[table["kind"] == kind]
        for model, rows in part.groupby("model", sort=False):
            ax.plot(rows["horizon"], rows[column], marker="o", lw=1.2, label=str(model))
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("horizon [min]")
        ax.set_ylabel(column)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path, title or f"physiotwin evaluate: {column} by horizon")
