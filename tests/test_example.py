"""examples/quickstart-sfedca: a Flower app of its own, started with Flower's CLI, that uses
SpikeFed's strategies and client helper from the outside."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.processes import LocalFederation

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Flower's managed local SuperLink listens on fixed ports: `flwr run` tests share one xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("flwr-local-superlink")]


def why_it_failed(federation: LocalFederation, log: str, cluster) -> str:
    """What the SuperLink and Ray kept of a failed run: a simulation process that died leaves
    nothing in the log, and the SuperLink's status details then read "No heartbeat received
    from the task"."""
    run_id = re.search(r"Successfully started run (\d+)", log)
    if not run_id:
        return "(no run was started)"
    listed = federation.cli("ls", "--run-id", run_id.group(1), "--format", "json")
    details = json.loads(listed.stdout)["runs"][0]["status-details"]
    return f"status details: {details!r}\nThe newest Ray driver log ends:\n{cluster.newest_driver_log()}"


def test_flwr_run_of_the_quickstart_completes_with_sfedca_over_fedadam(tmp_path, shared_ray_cluster):
    """The example's own ServerApp and ClientApp under `flwr run`, SFedCA's choice aggregated
    by Flower's FedAdam (another strategy in the same place is one name: every strategy runs
    end to end in tests/test_compare.py)."""
    federation = LocalFederation(tmp_path / "flwr-home")  # `flwr run` starts its SuperLink: stop() ends it
    try:
        proc = subprocess.run(
            [str(BIN / "flwr"), "run", "examples/quickstart-sfedca", "--run-config",
             "strategy='sfedca' aggregator='fedadam' num-server-rounds=4 fraction-train=0.3", "--federation-config",
             "num-supernodes=6", "--stream"], capture_output=True, text=True, cwd=ROOT, env=federation.env, timeout=300)
        log = proc.stdout + proc.stderr
        final = re.search(r"final test accuracy ([0-9.]+) with SFedCA over FedAdam", log)
        why = "" if proc.returncode == 0 and final else why_it_failed(federation, log, shared_ray_cluster)
    finally:
        federation.stop()
    assert proc.returncode == 0, f"{log[-3000:]}\n{why}"
    assert "Traceback" not in log and "lack the metric" not in log and "first phase" not in log, log[-3000:]
    assert final, f"{log[-3000:]}\n{why}"
    accuracy = float(final.group(1))
    assert accuracy > 0.2  # 10 classes: chance is 0.1
    cohorts = [line.split("[", 1)[1] for line in log.splitlines() if "configure_train: clients" in line]
    # fraction-train 0.3 of 6 nodes: 2 train; SFedCA draws 2 x 2 candidates, credits them from the
    # statistics the helper measured, and uploads only the 2 it chose (no weights in the first phase)
    assert len(cohorts) == 4 and all(len(c.split(",")) == 4 for c in cohorts)
