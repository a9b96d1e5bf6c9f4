"""End to end: the real ServerApp and ClientApp on Flower's Ray simulation engine."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.simulation import read_rounds, resolve, simulate
from strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def spikefed_run(settings: dict, timeout=300) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "experiments", "run"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def results_of(proc) -> Path:
    line = next(l for l in proc.stdout.splitlines() if l.startswith("results: "))
    return Path(line.removeprefix("results: "))


def test_simulation_writes_results_and_repeats_with_the_same_seed(tiny):
    runs = [results_of(spikefed_run({**tiny, "run-name": f"run{i}"})) for i in range(2)]
    rows = [read_rounds(d) for d in runs]
    assert [r["round"] for r in rows[0]] == ["1", "2"]
    for row in rows[0]:
        assert math.isfinite(float(row["test_accuracy"])) and 0 <= float(row["test_accuracy"]) <= 1
        assert len(row["selected_clients"].split()) == 2  # fraction-train 0.5 of 4 clients
        assert 0 < float(row["firing_rate"]) <= 1
    assert (runs[0] / "config.json").exists() and (runs[0] / "checkpoint.pt").exists()
    for key in ("test_accuracy", "test_loss", "train_loss", "selected_clients"):
        assert [r[key] for r in rows[0]] == [r[key] for r in rows[1]]


def test_federated_evaluation_fills_the_accuracy_column(tiny):
    proc = spikefed_run({**tiny, "server-eval": "false", "fraction-evaluate": 1.0,
                         "partitioner": "pathological", "run-name": "fedeval"})
    rows = read_rounds(results_of(proc))
    assert len(rows) == 2
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in rows)
    assert all(r["firing_rate"] == "" for r in rows)  # measured by server evaluation only


def test_flwr_run_uses_the_same_app_and_says_a_bad_config_in_one_line(tmp_path):
    """`flwr run .` with Flower's own CLI and a managed local SuperLink, using SFedCA
    (its credits need the firing-rate metrics to survive Flower's serialisation); then
    an invalid value, reported in one line without a traceback."""
    home = tmp_path / "flwr-home"
    env = {**os.environ, "FLWR_HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}",
           "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    results = tmp_path / "results"
    run_config = (f"strategy='sfedca' num-server-rounds=2 num-partitions=3 fraction-train=0.34 min-train-nodes=1 "
                  f"sfedca-rule='top-credit' sfedca-statistic='class' run-name='flwr' results-dir='{results}'")

    def flwr_run(config: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), "run", ".", "--run-config", config,
                               "--federation-config", "num-supernodes=3", "--stream"],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=400)

    # one bad value here (each `flwr run` costs a simulation start); tests/test_config.py covers every check
    bad = {"workload='nope'": "config error: workload='nope' is unknown; accepted: classify, dda, esvae"}
    try:
        proc = flwr_run(run_config)
        refused = {value: flwr_run(value) for value in bad}
    finally:
        # flwr starts a detached flower-superlink that outlives the run: stop ours.
        subprocess.run(["pkill", "-f", f"flower-superlink.*{home}"], check=False)
    for value, line in bad.items():
        out = refused[value].stdout + refused[value].stderr
        assert out.count(line) == 1 and "Traceback" not in out, out[-3000:]
        # the run fails: Flower's simulation process exits with its exception code (the
        # `flwr run` command itself exits 0 after streaming, whatever the run's outcome)
        assert "Exit Code: 700" in out
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_rounds(results / "flwr")
    assert len(rows) == 2
    for row in rows:  # 2 candidates train, the one with the higher credit is aggregated
        scores = dict(pair.split(":") for pair in row["scores"].split())
        assert len(scores) == 2 and all(float(v) > 0 for v in scores.values())
        best = max(scores, key=lambda pid: (float(scores[pid]), -int(pid)))
        assert row["selected_clients"] == best
        # two phases: 2 models down, 2 statistics replies and 1 model up
        model = int(row["downlink_bytes"]) / 2
        assert model < int(row["uplink_bytes"]) < 1.3 * model


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_runs_end_to_end_and_records_its_selection(strategy, tmp_path):
    # in this process (the CLI is covered above): the simulation is the same, without a Python start-up
    cfg = resolve({"strategy": strategy, "num-partitions": 6, "num-server-rounds": 2, "fraction-train": 0.34,
                   "local-epochs": 1, "run-name": strategy, "results-dir": str(tmp_path)})
    rows = read_rounds(simulate(cfg))
    assert [r["round"] for r in rows] == ["1", "2"]
    for row in rows:
        chosen = row["selected_clients"].split()
        assert 1 <= len(chosen) <= 2 and set(chosen) <= {str(i) for i in range(6)}
        assert math.isfinite(float(row["test_accuracy"]))
        assert int(row["uplink_bytes"]) > 0 and int(row["downlink_bytes"]) > 0
        # spiking energy below the same-shape ANN's: sparse accumulates against MACs
        assert 0 < float(row["energy_snn_j"]) < float(row["energy_ann_j"])
    assert float(rows[1]["energy_snn_j_cumulative"]) == pytest.approx(
        float(rows[0]["energy_snn_j"]) + float(rows[1]["energy_snn_j"]), rel=1e-4)
    if strategy == "sfedca":  # two phases: 4 candidates train, 2 upload their weights
        for row in rows:
            model = int(row["downlink_bytes"]) / 4
            assert row["client_updates"] == "4" and len(row["selected_clients"].split()) == 2
            scored = {pair.split(":")[0] for pair in row["scores"].split()}
            assert len(scored) == 4 and set(row["selected_clients"].split()) <= scored
            assert 2 * model < int(row["uplink_bytes"]) < 2.5 * model
    elif strategy != "power-of-choice":  # one phase: every trained client uploads (PoC also sends queries)
        for row in rows:
            assert int(row["uplink_bytes"]) > int(row["downlink_bytes"]) * 0.9
