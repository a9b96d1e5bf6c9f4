"""The wheel is what a user installs: built from this checkout, installed (not editable)
into a fresh venv, it must run a federation from another folder, shipped experiments included."""

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_runs_a_round_outside_the_checkout(tmp_path):
    # built from a copy: setuptools' build/ folder would otherwise land in the checkout
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "results", "data-cache", "build", "*.egg-info",
                                                                 "__pycache__", "docker", "docs"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", tmp_path / "dist", source], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("spikefed-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "models/dda/__init__.py" in names and "experiments/configs/smoke.toml" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([uv, "pip", "install", "-q", "--no-deps", "--python", venv / "bin" / "python", wheel], check=True)
    # the dependencies from this environment, after the venv's own site-packages (so that
    # the installed wheel, not this checkout, is what imports)
    venv_site = next((venv / "lib").glob("python3*/site-packages"))
    (venv_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    # Flower's Ray backend sets PYTHONPATH to its sys.path, this checkout included, in the process of an
    # in-process simulation (flwr raybackend.init_ray); a later test of that worker would inherit it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    imported = subprocess.run([venv / "bin" / "python", "-c", "import models.dda, server.app; print(server.app.__file__)"],
                              cwd=work, check=True, capture_output=True, text=True, env=env).stdout
    assert str(venv_site) in imported
    run = subprocess.run([venv / "bin" / "spikefed", "run", "--set", "num-server-rounds=1", "--set", "num-partitions=2",
                          "--set", "local-epochs=1", "--set", "run-name=wheel"],
                         cwd=work, capture_output=True, text=True, timeout=300, check=False, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len((work / "results" / "wheel" / "rounds.csv").read_text().splitlines()) == 2  # header + round 1
    listed = subprocess.run([venv / "bin" / "spikefed", "compare", "smoke", "--dry-run"], cwd=work,
                            capture_output=True, text=True, timeout=120, check=False, env=env)
    assert listed.returncode == 0 and "cells" in listed.stdout, listed.stderr[-2000:]
