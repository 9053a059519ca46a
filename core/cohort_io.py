"""Cohort results out: per-patient summaries and chunked Zarr stores.

- `measurable`: the variables of a result that an installed observation model reads
  (what an instrument would report), with that model;
- `summary_dataset`: per-patient summaries of those variables (every `SeriesMetric` a
  plugin registers for the kind), as an instrument would report them (clipped to the
  observation model's ``reading_limits``);
- `ZarrWriter`: a chunked Zarr store written one region of patients at a time, so memory
  stays bounded whatever the cohort's size. The store is built as ``OUT.zarr.part`` and
  moved to ``OUT.zarr`` when every chunk is in; each finished chunk leaves a marker, so a
  rerun of the same run resumes where the last one stopped (a crash loses at most the
  chunks being written). A ``.part`` store of a different run is refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import xarray as xr

from .errors import OutputError

__all__ = ["measurable", "summary_dataset", "ZarrWriter", "fingerprint"]


def measurable(variables: Iterable[str]) -> list[tuple[str, type]]:
    """``[(variable, observation model class)]``: the variables that an installed observation
    model reads (by the output's bare name), one per model, in the models' order."""
    from .registry import observation_models

    variables = list(variables)
    out: list[tuple[str, type]] = []
    for cls in observation_models().values():
        found = [v for v in variables if "." in v and v.split(".", 1)[1] == cls.output and v not in dict(out)]
        if len(found) == 1:
            out.append((found[0], cls))
    return out


def reported(values: np.ndarray, cls) -> np.ndarray:
    """What the instrument would report: values clipped to its reading limits (if any)."""
    limits = getattr(cls, "reading_limits", None)
    return np.clip(values, *limits) if limits is not None else values


def summary_dataset(ds: xr.Dataset) -> xr.Dataset:
    """Per-patient summaries (dims ``patient``) of the measurable variables of ``ds``: one
    variable ``<variable>.<entry>`` per entry of every series metric of the kind. Patients
    whose solve failed get NaN."""
    from .registry import series_metrics

    status = np.atleast_1d(ds["solver_status"].values)
    data = {}
    for var, cls in measurable(ds.data_vars):
        series = np.atleast_2d(ds[var].values)
        for metric in series_metrics(cls.kind):
            rows = [metric.summarise(reported(row, cls), len(row)) if s == 0 else None
                    for row, s in zip(series, status)]
            keys = next((list(r) for r in rows if r is not None), [])
            for key in keys:
                values = np.asarray([np.nan if r is None else float(r[key]) for r in rows])
                data[f"{var}.{key}"] = xr.Variable(("patient",), values, attrs={
                    "long_name": f"{key} ({metric.name}: {metric.description}) of {var}",
                    "of": var, "metric": metric.name, "entry": key, "headline": int(key in metric.headline),
                    "reading_limits": " ".join(f"{x:g}" for x in (cls.reading_limits or ()))})
    keep = [v for v in ("solver_status", "solver_message", "parameter_values", "timeline_index") if v in ds]
    out = ds[keep].copy()
    out = out.assign(data)
    out.attrs = {**ds.attrs, "content": "per-patient summaries (no trajectories)"}
    return out.drop_dims("time", errors="ignore")


def fingerprint(spec: dict) -> str:
    """A short checksum of a run's specification (what a resumed run must share)."""
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ZarrWriter:
    """A Zarr store written region by region (dims ``patient`` and others).

    Arguments:
        path: the final store (``OUT.zarr``); work goes to ``OUT.zarr.part``.
        template: a Dataset with the first chunk's variables (shapes along ``patient`` are
            taken from ``names``); its attributes go to the store.
        names: every patient name (the ``patient`` coordinate).
        chunk: patients per Zarr chunk (one region per chunk).
        spec: the run's specification; its fingerprint is kept to refuse resuming another run.
        outer: ``(dim, labels)``: an outer dimension (a trial's arms) put before ``patient``
            on every patient variable; each region is then one label x one chunk.
    """

    def __init__(self, path: str | Path, template: xr.Dataset | None, names: Sequence[str], chunk: int, spec: dict,
                 outer: tuple[str, Sequence[str]] | None = None):
        self.path = Path(path)
        self.outer = outer
        self.part = self.path.with_name(self.path.name + ".part")
        self.marks = self.part / "_physiotwin_done"
        self.chunk = int(chunk)
        self.key = fingerprint(spec)
        if not self.path.parent.is_dir():
            raise OutputError(f"output {self.path}: folder {self.path.parent} does not exist")
        if self.part.exists():
            if self._stored_key() != self.key:
                raise OutputError(f"{self.part} holds an unfinished run with another specification; remove it "
                                  f"to start over")
            return
        self._create(template, names)

    def _stored_key(self) -> str | None:
        try:
            return (self.marks / "fingerprint").read_text().strip()
        except OSError:
            return None

    def _create(self, template: xr.Dataset, names: Sequence[str]) -> None:
        import dask.array as da

        n = len(names)
        data = {}
        encoding = {}
        sizes = {**template.sizes, "patient": n}
        for name, var in template.data_vars.items():
            dims = var.dims
            if self.outer is not None and "patient" in dims:
                dims = (self.outer[0],) + dims
                sizes[self.outer[0]] = len(self.outer[1])
            shape = tuple(sizes[d] for d in dims)
            chunks = tuple(self.chunk if d == "patient" else 1 if self.outer and d == self.outer[0] else sizes[d]
                           for d in dims)
            fill = "" if var.dtype.kind == "U" else 0
            data[name] = xr.Variable(dims, da.full(shape, fill, dtype=var.dtype, chunks=chunks), attrs=var.attrs)
            encoding[name] = {"chunks": chunks}
        coords = {k: v.variable for k, v in template.coords.items() if "patient" not in v.dims}
        width = template["patient"].dtype
        coords["patient"] = xr.Variable(("patient",), np.asarray(names, dtype=width))
        if self.outer is not None:
            coords[self.outer[0]] = xr.Variable((self.outer[0],), np.asarray(list(self.outer[1]), dtype=str))
        store = xr.Dataset(data, coords=coords, attrs={**template.attrs, "run_fingerprint": self.key})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fixed-width strings are not yet in the Zarr v3 spec
            store.to_zarr(self.part, mode="w", compute=False, encoding=encoding)
        self.marks.mkdir()
        (self.marks / "fingerprint").write_text(self.key)

    def done(self) -> set:
        """Regions already written (by this run or an interrupted one): chunk numbers, or
        ``(outer index, chunk)`` pairs with an outer dimension."""
        marks = [p.name.split("-")[1:] for p in self.marks.glob("chunk-*")]
        return {int(m[0]) if len(m) == 1 else (int(m[0]), int(m[1])) for m in marks}

    def write(self, k: int, ds: xr.Dataset, outer: int | None = None) -> None:
        """Write chunk ``k`` (patients ``k*chunk ...``; of outer label ``outer``) and mark it done."""
        a = k * self.chunk
        region = ds.drop_vars([v for v in ds.variables if "patient" not in ds[v].dims])
        where = {"patient": slice(a, a + ds.sizes["patient"])}
        if self.outer is not None:
            region = region.expand_dims(self.outer[0])
            where[self.outer[0]] = slice(outer, outer + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            region.to_zarr(self.part, region=where, mode="r+")
        (self.marks / (f"chunk-{k:06d}" if outer is None else f"chunk-{outer:03d}-{k:06d}")).touch()

    def finish(self, regions: int | set) -> Path:
        """Move the complete store into place (replacing an older one) once every region
        (``range(regions)``, or the set given) is written."""
        expected = set(range(regions)) if isinstance(regions, int) else set(regions)
        missing = sorted(expected - self.done())
        if missing:
            raise OutputError(f"{self.part}: chunks {missing[:5]} were not written")
        shutil.rmtree(self.marks)
        if self.path.exists():
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self.part.rename(self.path)
        return self.path
