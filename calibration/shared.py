"""A trained population's shared residual networks on disk (`calibrate_population` writes
them; `calibrate(..., shared=DIR)` and ``physiotwin calibrate --population DIR`` read them).

``population.json`` holds the organs, observation models, network spec, settings, the
patients with their conditioning vectors, the training history and the checksum of
``networks.eqx`` (the networks, equinox serialisation); a changed or foreign file is a
`TwinError` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import numpy as np

from ..composer import compose
from ..errors import TwinError
from .hybrid import Hybrid
from .store import sha

__all__ = ["Population", "load_population", "POP_FORMAT"]

POP_FORMAT = "physiotwin-population/1"


class Population:
    """A trained population: the shared networks and what they were trained on."""

    def __init__(self, organs, observations, hybrid: Hybrid, meta: dict, directory: Path | None = None):
        self.organs, self.observations, self.hybrid, self.meta, self.directory = (
            list(organs), observations, hybrid, meta, directory)

    @property
    def conditioning(self) -> dict[str, np.ndarray]:
        return {p["name"]: np.asarray(p["cond"]) for p in self.meta["patients"]}

    @property
    def networks_sha(self) -> str:
        return self.meta["files"]["networks.eqx"]

    def __repr__(self):
        return (f"Population({len(self.meta['patients'])} patients, organs={self.organs}, "
                f"slots={self.meta['spec']['slots']}, conditioning={self.meta['spec']['conditioning']})")


def load_population(directory) -> Population:
    """A population directory written by `calibrate_population` (checksums checked)."""
    directory = Path(directory)
    path = directory / "population.json"
    if not path.is_file():
        raise TwinError(f"{directory}: not a population directory (no population.json)")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TwinError(f"{path}: corrupted ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != POP_FORMAT:
        raise TwinError(f"{path}: not a {POP_FORMAT} file")
    nets = directory / "networks.eqx"
    if not nets.is_file() or sha(nets) != meta.get("files", {}).get("networks.eqx"):
        raise TwinError(f"{nets}: missing or corrupted (checksum does not match population.json)")
    model = compose(meta["organs"])
    if list(model.state_names) != meta.get("state_names"):
        raise TwinError(f"{path}: the installed organs {meta['organs']} no longer declare the states this population "
                        f"was trained with")
    try:
        hybrid = eqx.tree_deserialise_leaves(nets, Hybrid.from_spec(model, meta["spec"]))
    except (RuntimeError, ValueError, KeyError) as err:
        raise TwinError(f"{nets}: cannot be read ({str(err).splitlines()[0]})") from None
    observations = [(o["name"], o.get("options", {})) for o in meta["observations"]]
    return Population(meta["organs"], observations, hybrid, meta, directory)
