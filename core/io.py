"""Files out: NetCDF results and plots, written atomically.

An output file either appears complete or not at all: everything is written to a
temporary file in the destination folder and moved into place at the end.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["OutputError", "check_writable", "write_netcdf", "plot_glucose"]


class OutputError(OSError):
    """An output path that cannot be written."""


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
def _atomic(path: Path, suffix: str):
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


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to NetCDF-4 atomically."""
    path = check_writable(path)
    encoding = {name: {"zlib": True, "complevel": 4} for name, v in ds.data_vars.items() if v.dtype.kind == "f"}
    with _atomic(path, ".nc") as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return path


def plot_glucose(ds: xr.Dataset, path: str | Path, title: str | None = None) -> Path:
    """Plot glucose (and plasma insulin, when present) of every patient to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = check_writable(path, "plot")
    hours = ds["time"].values / 60.0
    panels = [v for v in ("glucose.plasma_glucose", "glucose.subcutaneous_glucose", "glucose.plasma_insulin") if v in ds]
    if not panels:
        panels = [v for v in ds.data_vars if "time" in ds[v].dims][:3]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.6 * len(panels)), sharex=True, squeeze=False)
    patients = list(np.atleast_1d(ds["patient"].values))
    for ax, name in zip(axes[:, 0], panels):
        values = np.atleast_2d(ds[name].values)
        for label, row in zip(patients, values):
            ax.plot(hours, row, lw=1.2, label=str(label))
        if name.endswith("glucose"):
            ax.axhspan(70, 180, color="tab:green", alpha=0.08, lw=0)
        ax.set_ylabel(f"{ds[name].attrs.get('long_name', name).split(',')[0]}\n[{ds[name].attrs.get('units', '')}]",
                      fontsize=8)
        ax.grid(alpha=0.3)
    if len(patients) <= 10:
        axes[0, 0].legend(fontsize=7, ncol=min(5, len(patients)))
    axes[-1, 0].set_xlabel("time [h]")
    fig.suptitle(title or f"physiotwin: {ds.attrs.get('organs', '')}")
    fig.tight_layout()
    with _atomic(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
