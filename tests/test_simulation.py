"""End to end: the real ServerApp and ClientApp on Flower's Ray simulation engine."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RayCluster, failure_tail

from experiments.processes import LocalFederation
from experiments.simulation import read_rounds

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def spikefed_run(settings: dict, timeout=300, env=None, options=()) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "experiments", "run", *options]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)
    assert proc.returncode == 0, failure_tail(proc.stderr)
    return proc


def results_of(proc) -> Path:
    line = next(l for l in proc.stdout.splitlines() if l.startswith("results: "))
    return Path(line.removeprefix("results: "))


@pytest.fixture
def two_node_ray_cluster():
    """A Ray cluster of two nodes on this machine, 1 CPU each, apart from the suite's shared one."""
    cluster = RayCluster()
    try:
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        yield cluster.address
    finally:
        cluster.stop()


def test_a_two_node_ray_cluster_runs_clients_on_both_nodes_evaluates_them_and_verbose_shows_flowers_output(
        tiny, two_node_ray_cluster):
    """`spikefed run --verbose` end to end, joining an existing Ray cluster through ray-address
    (not RAY_ADDRESS): Flower places one ClientApp actor per node and the replies say where
    they ran; federated evaluation (server-eval off) fills the accuracy column; `--verbose`
    keeps Flower's output on the console and writes no log.txt. One run holds the three (each
    run costs the suite about 40 s). That a run repeats exactly with the same seed, across
    processes, is checked by the kill -9 test in tests/test_reliability.py."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = spikefed_run({**tiny, "run-name": "run", "ray-address": two_node_ray_cluster, "server-eval": "false",
                         "fraction-evaluate": 1.0, "partitioner": "pathological"}, env=env, options=["--verbose"])
    assert "Starting RandomSelection strategy" in proc.stderr and "round 1/2: accuracy" in proc.stderr
    run = results_of(proc)
    assert not (run / "log.txt").exists()
    rows = read_rounds(run)
    assert [r["round"] for r in rows] == ["1", "2"]
    for row in rows:
        assert math.isfinite(float(row["test_accuracy"])) and 0 <= float(row["test_accuracy"]) <= 1
        assert row["firing_rate"] == ""  # measured by server evaluation only
        assert len(row["selected_clients"].split()) == 2  # fraction-train 0.5 of 4 clients
        assert sum(int(n) for n in re.findall(r":(\d+)(?: |$)", row["executors"])) == 2, row["executors"]
    hosts = {where.split("/")[0] for row in rows for where in row["executors"].split()}
    assert len(hosts) == 2 and all(h.startswith("ray-") for h in hosts), [r["executors"] for r in rows]
    assert (run / "config.json").exists() and (run / "checkpoint.pt").exists()


def test_a_run_shows_a_live_line_and_one_line_per_failing_client_and_logs_flowers_output(tiny):
    """Quiet by default: Flower's and Ray's INFO output in the run's log.txt, on the console
    the live line, a rejected reply's one line and the results (`--verbose`: the two-node test)."""
    quiet = spikefed_run({**tiny, "fault-crash": 0.5, "run-name": "quiet", "tracking": "mlflow"})
    console = (quiet.stdout + quiet.stderr).splitlines()
    rejected = [line for line in console if "rejected (error)" in line]
    assert rejected and all(line.endswith("injected crash (fault-crash)") for line in rejected)
    assert len(console) <= len(rejected) + 6 and "Traceback" not in quiet.stderr, console
    log = (results_of(quiet) / "log.txt").read_text()
    assert "Starting RandomSelection strategy" in log and "round 2/2: accuracy" in log and "Traceback" in log
    from mlflow.tracking import MlflowClient  # tracked as it went: MLflow's own client reads it back

    client = MlflowClient(tracking_uri=f"sqlite:///{Path(tiny['results-dir']).resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(tiny["results-dir"]).experiment_id])
    rows = read_rounds(results_of(quiet))
    assert run.info.run_name == "quiet" and run.data.params["fault-crash"] == "0.5"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_accuracy")] == [
        (int(r["round"]), float(r["test_accuracy"])) for r in rows]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "clients_rejected")] == [
        float(len(r["rejected_clients"].split())) for r in rows]


@pytest.mark.xdist_group("flwr-local-superlink")  # fixed ports: never beside another `flwr run` test
def test_flwr_run_uses_the_same_app_and_says_a_bad_config_in_one_line(tmp_path):
    """`flwr run .` with Flower's own CLI and a managed local SuperLink, using SFedCA
    (its credits need the firing-rate metrics to survive Flower's serialisation); then
    an invalid value, reported in one line without a traceback. The model updates go
    through Flower's client-side fixed-clipping DP (strategies/privacy.py), accounted, and
    the chosen ones are aggregated by Flower's FedProx (the clients add its proximal term)."""
    federation = LocalFederation(tmp_path / "flwr-home")  # `flwr run` starts its SuperLink: stop() ends it
    results = tmp_path / "results"
    run_config = (f"strategy='sfedca' num-server-rounds=2 num-partitions=3 fraction-train=0.34 min-train-nodes=1 "
                  f"sfedca-rule='top-credit' sfedca-statistic='class' run-name='flwr' results-dir='{results}' "
                  "dp-noise-multiplier=0.01 dp-clipping-norm=100.0 dp-clipping='client' aggregator='fedprox' "
                  "fedprox-mu=0.1")

    def flwr_run(config: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "flwr"), "run", ".", "--run-config", config,
                               "--federation-config", "num-supernodes=3", "--stream"],
                              capture_output=True, text=True, cwd=ROOT, env=federation.env, timeout=400)

    # one bad value here (each `flwr run` costs a simulation start); tests/test_config.py covers every check
    bad = {"dp-clipping-norm=0.0": "config error: dp-clipping-norm=0.0 is out of range"}
    try:
        proc = flwr_run(run_config)
        refused = {value: flwr_run(value) for value in bad}
    finally:
        federation.stop()
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
    epsilons = [float(row["dp_model_epsilon"]) for row in rows]  # one release of one client per round
    assert 0 < epsilons[0] < epsilons[1] and rows[0]["dp_statistics_epsilon"] == ""
