"""A third-party organ, pip-installed from its own package, is discovered through
the ``physiotwin`` entry-point group and composed with the built-in glucose organ,
without touching this repository (tests/plugin_example is the README's example)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent / "plugin_example"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(EXAMPLE, tmp / "src")
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(target), env.get("PYTHONPATH", "")])
    return env, tmp


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "physiotwin.cli", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_installed_plugin_is_listed_and_composed(plugin_env):
    env, tmp = plugin_env
    res = cli(env, "organs", "--json")
    assert res.returncode == 0, res.stderr
    organs = {o["name"]: o for o in json.loads(res.stdout)}
    assert organs["hba1c"]["distribution"] == "physiotwin-hba1c"
    assert organs["hba1c"]["inputs"] == {"G": "mg/dL"}

    (tmp / "tl.csv").write_text("time,kind,value,unit\n60,carbs,60,g\n")
    out = tmp / "run.nc"
    res = cli(env, "simulate", "--organ", "glucose", "--organ", "hba1c", "--patient", "adult#001",
              "--timeline", tmp / "tl.csv", "--hours", 12, "--out", out)
    assert res.returncode == 0, res.stderr
    check = ("import xarray as xr, numpy as np; ds = xr.open_dataset(r'%s'); a = ds['hba1c.hba1c'].values; "
             "g0 = ds['glucose.plasma_glucose'].values[0]; print(a[0], a[-1], g0)" % out)
    a0, a_end, g0 = map(float, subprocess.run([sys.executable, "-c", check], env=env, capture_output=True,
                                              text=True, check=True).stdout.split())
    # starts at the steady state for the patient's basal glucose and rises after the meal
    expected = 100 * 2.83e-9 * g0 * 172800 / (1 + 2.83e-9 * g0 * 172800)
    assert a0 == pytest.approx(expected, rel=1e-9)
    assert a_end > a0


def test_plugin_is_absent_without_installation():
    res = subprocess.run([sys.executable, "-m", "physiotwin.cli", "organs", "--json"], capture_output=True, text=True)
    assert "hba1c" not in {o["name"] for o in json.loads(res.stdout)}
