"""A twin on disk: a directory written atomically and read back bit-identically.

``twin.json`` (readable metadata and checksums), ``arrays.npz`` (every fitted array,
exact), ``networks.eqx`` (residual networks, equinox serialisation) and
``record.csv`` (the record it was fitted on). Anything unreadable, corrupted or
foreign is a `TwinError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import equinox as eqx
import numpy as np

from ..composer import compose
from ..errors import TwinError, WiringError
from .fit import FitResult
from .hybrid import Hybrid
from .settings import FitSettings
from .space import ParameterSpace

__all__ = ["write_twin", "read_twin", "check_unedited", "FORMAT", "sha", "json_default", "move_into_place"]

FORMAT = "physiotwin-twin/2"
_VARIANTS = ("population", "mechanistic", "twin")


def sha(path: Path) -> str:
    """SHA-256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def move_into_place(tmp: Path, directory: Path, marker: str, what: str) -> None:
    """Replace ``directory`` by the finished ``tmp`` (same file system): an existing
    directory is replaced only when it holds ``marker`` (or nothing)."""
    if directory.exists():
        if not directory.is_dir() or (not (directory / marker).exists() and any(directory.iterdir())):
            raise TwinError(f"{directory}: exists and is not a {what} directory; not overwriting it")
        shutil.rmtree(directory)
    tmp.rename(directory)


def json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def _write_arrays(twin, tmp: Path) -> dict[str, str]:
    r = twin.result
    corr = {f"corr_{name}": v for name, v in r.corrections.items()}
    replay = {f"{what}_{variant}": a for variant, (starts, ends) in r.windows.items()
              for what, a in (("window_starts", starts), ("window_ends", ends))}
    replay.update({f"covariance_{variant}": c for variant, c in r.covariance.items()})
    np.savez(tmp / "arrays.npz", z=r.z, z_mech=r.z_mech, errors=r.errors, errors_mech=r.errors_mech, init=r.init,
             end_state=r.end_state, scale=twin.scale, **corr, **replay)
    files = {"arrays.npz": sha(tmp / "arrays.npz")}
    if r.hybrid is not None:
        eqx.tree_serialise_leaves(tmp / "networks.eqx", r.hybrid)
        files["networks.eqx"] = sha(tmp / "networks.eqx")
    if twin.record_text is not None:
        (tmp / "record.csv").write_text(twin.record_text)
        files["record.csv"] = sha(tmp / "record.csv")
    return files


def _metadata(twin, files: dict) -> dict:
    r = twin.result
    return {
        "format": FORMAT,
        "organs": twin.organs,
        "state_names": list(twin.model.state_names),
        "param_names": list(twin.model.param_names),
        "observations": [{"name": n, "kind": om.kind, "options": o}
                         for (n, o), om in zip(twin.observation_specs, twin.observations)],
        "space": twin.space.to_json(),
        "settings": asdict(twin.settings),
        "filters": twin.filters,
        "hybrid": None if r.hybrid is None else r.hybrid.spec(),
        "record": twin.record_source,
        "parameters": {v: twin.parameters(v) for v in _VARIANTS},
        "errors": {v: dict(zip(twin.kinds, twin.errors(v))) for v in _VARIANTS if v != "population"},
        "corrections": {name: [float(x) for x in np.exp(v)] for name, v in r.corrections.items()},
        "diagnostics": r.diagnostics,
        "history": r.history,
        "files": files,
    }


def write_twin(twin, directory) -> Path:
    """Write ``twin`` to ``directory`` (created; an existing twin there is replaced atomically)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".twin-", dir=directory.parent))
    try:
        files = _write_arrays(twin, tmp)
        (tmp / "twin.json").write_text(json.dumps(_metadata(twin, files), indent=1, default=json_default))
        move_into_place(tmp, directory, "twin.json", "twin")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _read_meta(directory: Path) -> dict:
    meta_path = directory / "twin.json"
    if not meta_path.is_file():
        raise TwinError(f"{directory}: not a twin directory (no twin.json)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TwinError(f"{meta_path}: corrupted ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise TwinError(f"{meta_path}: not a {FORMAT} file (found {found!r}; a twin saved by another version of "
                        f"physiotwin must be calibrated again)")
    for name, digest in meta.get("files", {}).items():
        p = directory / name
        if not p.is_file():
            raise TwinError(f"{p}: missing")
        if sha(p) != digest:
            raise TwinError(f"{p}: corrupted (checksum does not match twin.json)")
    return meta


def _model_of(meta: dict, meta_path: Path):
    try:
        model = compose(meta["organs"])
    except WiringError as err:
        raise TwinError(f"{meta_path}: the twin's organs {meta['organs']} cannot be composed here: {err}") from None
    except (KeyError, TypeError) as err:
        raise TwinError(f"{meta_path}: corrupted (no usable 'organs': {err})") from None
    if list(model.state_names) != meta.get("state_names") or list(model.param_names) != meta.get("param_names"):
        raise TwinError(f"{meta_path}: the installed organs {meta['organs']} no longer declare the states/parameters "
                        f"this twin was fitted with (another organ version or composition)")
    return model


def _read_networks(path: Path, like: Hybrid, without_conditioning: bool) -> Hybrid:
    """The networks of ``path`` into the structure ``like``; twins saved before conditioning
    vectors existed hold the nets only (they get an empty conditioning vector)."""
    if without_conditioning:
        return eqx.tree_at(lambda h: h.nets, like, eqx.tree_deserialise_leaves(path, like.nets))
    return eqx.tree_deserialise_leaves(path, like)


def read_twin(directory) -> dict:
    """The parts of a saved twin, as the keyword arguments of `Twin`."""
    directory = Path(directory)
    meta = _read_meta(directory)
    model = _model_of(meta, directory / "twin.json")
    try:
        arrays = np.load(directory / "arrays.npz")
        hybrid = None
        if meta.get("hybrid") is not None:
            hybrid = _read_networks(directory / "networks.eqx", Hybrid.from_spec(model, meta["hybrid"]),
                                    "conditioning" not in meta["hybrid"])
        corr = {k[len("corr_"):]: arrays[k] for k in arrays.files if k.startswith("corr_")}
        # twins saved before what-if support have neither (`Twin.whatif` says so)
        windows = {v: (arrays[f"window_starts_{v}"], arrays[f"window_ends_{v}"]) for v in _VARIANTS
                   if f"window_starts_{v}" in arrays.files}
        covariance = {v: arrays[f"covariance_{v}"] for v in _VARIANTS if f"covariance_{v}" in arrays.files}
        result = FitResult(z=arrays["z"], z_mech=arrays["z_mech"], errors=arrays["errors"],
                           errors_mech=arrays["errors_mech"], corrections=corr, init=arrays["init"],
                           end_state=arrays["end_state"], hybrid=hybrid, scale=arrays["scale"],
                           history=meta.get("history", []), diagnostics=meta.get("diagnostics", {}),
                           windows=windows, covariance=covariance)
        space = ParameterSpace.from_json(meta["space"])
        settings = FitSettings(**{k: v for k, v in meta["settings"].items() if k in FitSettings.__dataclass_fields__})
        observations = [(o["name"], o.get("options", {})) for o in meta["observations"]]
        if space.names and max(space.index) >= len(model.param_names):
            raise ValueError("fitted parameter index out of range")
    except (KeyError, ValueError, TypeError, RuntimeError, OSError, WiringError) as err:
        raise TwinError(f"{directory}: cannot be read as a twin of {meta.get('organs')} "
                        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    record_text = (directory / "record.csv").read_text() if (directory / "record.csv").is_file() else None
    return dict(organs=meta["organs"], observations=observations, space=space, result=result, settings=settings,
                filters=meta["filters"], scale=arrays["scale"], record_source=meta.get("record", ""),
                record_text=record_text, model=model)


def check_unedited(twin, directory) -> None:
    """`TwinError` when the readable copies of the fitted values in ``twin.json`` (parameters)
    no longer equal the arrays the twin runs on: an edit there would be ignored, so it is
    refused with the parameter named."""
    meta_path = Path(directory) / "twin.json"
    declared = json.loads(meta_path.read_text()).get("parameters", {})
    for variant, values in declared.items():
        if variant not in _VARIANTS or not isinstance(values, dict):
            raise TwinError(f"{meta_path}: corrupted ('parameters' of {variant!r})")
        fitted = twin.parameters(variant)
        for name, value in values.items():
            ok = name in fitted and isinstance(value, (int, float)) and np.isclose(value, fitted[name], rtol=1e-9,
                                                                                   atol=0.0)
            if not ok:
                shown = f"{fitted[name]:.6g}" if name in fitted else "not fitted"
                raise TwinError(f"{meta_path}: 'parameters' of the {variant} variant were edited ({name} = {value!r} "
                                f"there, {shown} in arrays.npz): twin.json describes the fitted twin and is not read "
                                f"back; calibrate again (--fit chooses what is fitted), or simulate with a patients "
                                f"table for other values")
        if set(fitted) - set(values):
            raise TwinError(f"{meta_path}: 'parameters' of the {variant} variant lack "
                            f"{sorted(set(fitted) - set(values))[0]} (edited?)")

