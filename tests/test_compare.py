"""`spikefed compare`: the experiment file, the summary arithmetic, and the smoke grid end to end."""

import csv
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import failure_tail

from experiments.grid import load_experiment
from experiments.report import rounds_to_target, summarise
from experiments.simulation import read_rounds
from server.config import ConfigError, clients_per_round
from strategies import STRATEGIES

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "configs" / "smoke.toml"
CONFIGS = sorted((ROOT / "experiments" / "configs").glob("*.toml"))


def test_rounds_to_target_is_the_first_round_at_or_above_the_target():
    curve = [0.1, 0.5, 0.79, 0.8, 0.7, 0.95]
    assert rounds_to_target(curve, 0.8) == 4
    assert rounds_to_target(curve, 0.9) == 6
    assert rounds_to_target(curve, 0.05) == 1
    assert rounds_to_target(curve, 0.96) is None
    mse = [0.09, 0.05, 0.04, 0.06, 0.03]
    assert rounds_to_target(mse, 0.04, higher_is_better=False) == 3
    assert rounds_to_target(mse, 0.01, higher_is_better=False) is None


def test_summary_averages_over_seeds_and_leaves_unreached_targets_blank():
    cells = pd.DataFrame({
        "strategy": ["a", "a", "a", "b", "b"],
        "partition": ["p"] * 5,
        "seed": [0, 1, 2, 0, 1],
        "final_accuracy": [0.8, 0.9, 0.7, 0.5, 0.6],
        "last10_accuracy": [0.8, 0.9, 0.7, 0.5, 0.6],
        "best_accuracy": [0.9, 0.9, 0.8, 0.6, 0.6],
        "rounds_to_target": [4, 6, None, None, None],
        "client_updates": [30, 30, 30, 75, 75],
        "wall_seconds": [1.0, 2.0, 3.0, 1.0, 1.0],
    })
    summary = summarise(cells, "accuracy", order=["b", "a"]).set_index("strategy")
    assert list(summary.index) == ["b", "a"]
    assert summary.loc["a", "final_accuracy_mean"] == pytest.approx(0.8)
    assert summary.loc["a", "final_accuracy_std"] == pytest.approx(np.std([0.8, 0.9, 0.7]))
    assert summary.loc["a", "rounds_to_target_mean"] == pytest.approx(5.0)  # the two seeds that reached it
    assert summary.loc["a", "reached"] == "2/3"
    assert np.isnan(summary.loc["b", "rounds_to_target_mean"]) and summary.loc["b", "reached"] == "0/2"
    assert summary.loc["b", "client_updates_mean"] == 75


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_experiment_files_are_valid(path):
    experiment = load_experiment(path)
    seeds = sum(len(keys.get("seeds", experiment.seeds)) for keys in experiment.partitions.values())
    assert len(experiment.cells()) == len(experiment.strategies) * seeds


def test_variants_and_per_setting_seeds(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("""
strategies = ["random", "sfedca-top"]
seeds = [0, 1]
[run]
num-partitions = 10
[variants.sfedca-top]
strategy = "sfedca"
sfedca-rule = "top-credit"
sfedca-statistic = "class"
[partitions.a]
partitioner = "iid"
seeds = [5, 6, 7]
[partitions.b]
partitioner = "iid"
""")
    cells = load_experiment(path).cells()
    assert [(c.strategy, c.partition, c.seed) for c in cells][:3] == [("random", "a", 5), ("sfedca-top", "a", 5),
                                                                    ("random", "a", 6)]
    assert len(cells) == 2 * 3 + 2 * 2
    top = next(c for c in cells if c.strategy == "sfedca-top")
    assert (top.config.strategy, top.config.sfedca_rule, top.config.sfedca_statistic) == ("sfedca", "top-credit", "class")
    assert top.id == "sfedca-top_a_seed5" and top.config.run_name == top.id
    path.write_text(path.read_text().replace('strategy = "sfedca"', 'strategy = "nope"'))
    with pytest.raises(ConfigError, match=r"\[variants.sfedca-top\] must set strategy"):
        load_experiment(path)


def test_sfedca_grids_cover_the_issue_13_settings():
    """Each SFedCA rule against random, PoC and Oort (clustered on digits); 5 seeds at Dirichlet 0.1."""
    for name, partitions in (("sfedca_digits", {"dirichlet-0.1", "dirichlet-0.5", "pathological-2"}),
                             ("sfedca_fmnist", {"dirichlet-0.1", "pathological-2"})):
        experiment = load_experiment(ROOT / "experiments" / "configs" / f"{name}.toml")
        rules = {(c.config.strategy, c.config.sfedca_rule) for c in experiment.cells() if c.config.strategy == "sfedca"}
        assert rules == {("sfedca", "balance"), ("sfedca", "top-credit")}
        assert {"random", "power-of-choice", "oort"} <= {c.config.strategy for c in experiment.cells()}
        assert set(experiment.partitions) == partitions
        seeds = {p: {c.seed for c in experiment.cells() if c.partition == p} for p in partitions}
        assert len(seeds["dirichlet-0.1"]) == 5 and all(len(s) == 3 for p, s in seeds.items() if p != "dirichlet-0.1")
        assert all(c.config.num_partitions == 50 and clients_per_round(c.config) == 5 for c in experiment.cells())


def test_set_overrides_the_file(tmp_path):
    experiment = load_experiment(SMOKE, {"seeds": "3,4", "strategies": "oort", "num-server-rounds": "7",
                                         "results-dir": str(tmp_path)})
    cells = experiment.cells()
    assert [(c.strategy, c.seed) for c in cells] == [("oort", 3), ("oort", 4)]
    assert all(c.config.num_server_rounds == 7 for c in cells)
    assert experiment.directory == tmp_path / "smoke"


@pytest.mark.parametrize("text, sets, message", [
    ('colour = "red"', {}, "unknown key 'colour'"),
    ('strategies = ["sfedca", "best"]', {}, "'best' is not a strategy"),
    ("seeds = []", {}, "seeds=[] must be a non-empty list"),
    ("target = 1.5", {}, "target=1.5 is out of range for metric accuracy"),
    ('metric = "fid"', {}, "metric='fid' is unknown; accepted: accuracy, loss, mse"),
    ('[partitions.dirichlet-0.5]\npartitioner = "dirichlet"', {}, "quote labels that contain dots"),
    ('[partitions.p]\nstrategy = "random"', {}, "sets 'strategy', which the grid sets per cell"),
    ("[run]\nnum-partitons = 5", {}, "unknown config key 'num-partitons'"),
    ("", {"lr": "-1"}, "lr=-1.0 is out of range"),
])
def test_bad_experiment_files_are_refused_with_one_line(tmp_path, text, sets, message):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_experiment(path, sets)
    assert "\n" not in str(err.value)


def compare(*args, results, **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "experiments", "compare", str(SMOKE), "--set", f"results-dir={results}", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, failure_tail(err)
    return out, err


def check_clock(strategy: str, rows: list[dict], cfg) -> None:
    """The simulated clock by hand (devices of a trace whose bandwidth makes messages take
    under a microsecond): a round lasts as long as its slowest client's forward passes x
    its device's ms, per exchange. A train message costs 3 passes per sample and epoch plus
    2 per sample (firing statistics before and after), a query 1 per sample; every trained
    candidate counts (SFedCA, spike-diversity, DivFL: the scored ones), the upload phase
    computes nothing; Power-of-Choice's queried candidates are its scored ones."""
    from data import partition_sizes
    from strategies.devices import Devices

    sizes = partition_sizes(cfg)
    ms = {pid: d.compute_ms for pid, d in Devices.from_config(cfg, range(len(sizes))).devices.items()}

    def slowest(pids, passes_per_sample):
        return max(sizes[int(p)] * passes_per_sample * ms[int(p)] / 1000 for p in pids)

    train = 3 * cfg.local_epochs + 2
    total = 0.0
    for row in rows:
        chosen, scored = row["selected_clients"].split(), [p.split(":")[0] for p in row["scores"].split()]
        if strategy in ("sfedca", "spike-diversity", "divfl"):
            expected = slowest(scored, train)
        elif strategy == "power-of-choice":
            expected = slowest(scored, 1) + slowest(chosen, train)
        else:
            expected = slowest(chosen, train)
        total += expected
        assert float(row["sim_seconds"]) == pytest.approx(expected, rel=1e-4), (strategy, row)
        assert float(row["sim_seconds_cumulative"]) == pytest.approx(total, rel=1e-4)


def check_strategy_rows(strategy: str, rows: list[dict]) -> None:
    """What every strategy's run records: its choice, accuracy, bytes and energy per round."""
    assert [r["round"] for r in rows] == ["1", "2"]
    for row in rows:
        chosen = row["selected_clients"].split()
        assert 1 <= len(chosen) <= 2 and set(chosen) <= {str(i) for i in range(6)}
        assert math.isfinite(float(row["test_accuracy"])) and 0 < float(row["firing_rate"]) <= 1
        assert int(row["uplink_bytes"]) > 0 and int(row["downlink_bytes"]) > 0
        # spiking energy below the same-shape ANN's: sparse accumulates against MACs
        assert 0 < float(row["energy_snn_j"]) < float(row["energy_ann_j"])
    assert float(rows[1]["energy_snn_j_cumulative"]) == pytest.approx(
        float(rows[0]["energy_snn_j"]) + float(rows[1]["energy_snn_j"]), rel=1e-4)
    if strategy in ("sfedca", "spike-diversity"):  # two phases: 4 candidates train, 2 upload their weights
        for row in rows:
            model = int(row["downlink_bytes"]) / 4
            assert row["client_updates"] == "4" and len(row["selected_clients"].split()) == 2
            scored = {pair.split(":")[0] for pair in row["scores"].split()}
            assert len(scored) == 4 and set(row["selected_clients"].split()) <= scored
            assert 2 * model < int(row["uplink_bytes"]) < 2.5 * model
    elif strategy == "divfl":  # 4 candidates train and upload, 2 are aggregated
        for row in rows:
            assert row["client_updates"] == "4" and len(row["selected_clients"].split()) == 2
            assert int(row["uplink_bytes"]) > int(row["downlink_bytes"]) * 0.9
    elif strategy != "power-of-choice":  # one phase: every trained client uploads (PoC also sends queries)
        for row in rows:
            assert int(row["uplink_bytes"]) > int(row["downlink_bytes"]) * 0.9


@pytest.mark.slow
def test_a_grid_of_every_strategy_interrupted_resumes_and_reports(tmp_path):
    """smoke.toml over every strategy (2 rounds) on the devices of a FedScale-format trace:
    Ctrl-C after the first cell, `--dry-run` lists what is complete, the rerun skips it;
    then every strategy's rows and simulated clock, the summary, plots and report. Runs
    repeat exactly for a seed (tests/test_reliability.py), so a resumed grid equals an
    uninterrupted one once complete cells are kept as they are."""
    import pickle

    trace = tmp_path / "client_device_capacity"
    trace.write_bytes(pickle.dumps({i: {"computation": ms, "communication": 1e9} for i, ms in enumerate([1, 3, 9])}))
    sets = ["--set", f"strategies={','.join(sorted(STRATEGIES))}", "--set", "num-server-rounds=2",
            "--set", "local-epochs=1", "--set", "tracking=tensorboard", "--set", f"devices={trace}"]
    experiment = load_experiment(SMOKE, {"results-dir": str(tmp_path), "strategies": ",".join(sorted(STRATEGIES)),
                                         "num-server-rounds": "2", "local-epochs": "1", "devices": str(trace)})
    cells = [tmp_path / "smoke" / "cells" / c.id for c in experiment.cells()]
    # Ctrl-C reaches a process whose SIGINT is at its default (a background runner may ignore it)
    proc = compare(*sets, results=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (cells[0] / "cell.json").exists():  # Ctrl-C once the first cell is complete
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not (cells[1] / "cell.json").exists()
    finished_at = (cells[0] / "cell.json").stat().st_mtime_ns

    listing, _ = finish(compare(*sets, "--dry-run", results=tmp_path))
    assert f"{cells[0].name}\tcomplete" in listing and f"{cells[1].name}\tto run" in listing

    out_text, err = finish(compare(*sets, results=tmp_path))
    assert f"1 of {len(cells)} cells already complete" in err
    assert (cells[0] / "cell.json").stat().st_mtime_ns == finished_at  # not run again

    for cell in experiment.cells():
        rows = read_rounds(tmp_path / "smoke" / "cells" / cell.id)
        check_strategy_rows(cell.strategy, rows)
        check_clock(cell.strategy, rows, cell.config)
    out = tmp_path / "smoke"
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(experiment.strategies) * len(experiment.partitions)
    assert set(summary["strategy"]) == set(experiment.strategies)
    assert summary["final_accuracy_mean"].between(0, 1).all()
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == len(experiment.cells()) * 2
    assert (runs.groupby(["strategy", "seed"])["round"].max() == 2).all()
    # SFedCA trains a candidate set larger than the aggregated set; random trains what it aggregates
    updates = summary.set_index("strategy")["client_updates_mean"]
    assert updates["sfedca"] > updates["random"] == 2 * clients_per_round(experiment.cells()[0].config)
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"rounds-to-target.png"} | {f"accuracy-{p}.png" for p in experiment.partitions}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 100 and width > 100
    report = (out / "report.md").read_text()
    assert "| partition" in report and all(f"({p.name})" in report for p in pngs)
    assert "sim s to target" in report and summary["sim_seconds_mean"].gt(0).all()
    # the command ends with the summary, one row per strategy, and where the curves are
    assert all(strategy in out_text for strategy in experiment.strategies), out_text
    # each cell is its own TensorBoard run, named <strategy>/<partition>/seed<k>, one scalar per round
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for cell in experiment.cells():
        events = EventAccumulator(str(out / "cells" / "tensorboard" / cell.strategy / cell.partition / "seed0"))
        events.Reload()
        rows = read_rounds(out / "cells" / cell.id)
        assert [(e.step, round(e.value, 6)) for e in events.Scalars("test_accuracy")] == [
            (int(r["round"]), round(float(r["test_accuracy"]), 6)) for r in rows]
        assert {"energy_snn_j", "uplink_bytes", "clients_aggregated", "firing_rate/net.lif_out"} <= set(
            events.Tags()["scalars"])
    assert f"curves: {(out / f'accuracy-{next(iter(experiment.partitions))}.png').resolve()}" in out_text


def test_a_metric_a_workload_declares_gets_its_column_and_is_an_experiment_metric(monkeypatch, tmp_path):
    from models import WORKLOADS
    from models.workloads.classify import ClassifyWorkload
    from server.config import load_config
    from server.results import RunResults

    class WithF1(ClassifyWorkload):
        METRICS = {"accuracy": True, "f1": True}

    monkeypatch.setitem(WORKLOADS, "with-f1", WithF1())
    results = RunResults(tmp_path / "run", load_config({}))
    results.append({"round": 1, "test_accuracy": 0.75, "test_f1": 0.5})
    rows = list(csv.DictReader((tmp_path / "run" / "rounds.csv").open()))
    assert (rows[0]["test_accuracy"], rows[0]["test_f1"]) == ("0.75", "0.5")
    experiment = tmp_path / "f1.toml"
    experiment.write_text('strategies = ["random"]\nseeds = [0]\nmetric = "f1"\ntarget = 0.5\n'
                          '[partitions.iid]\npartitioner = "iid"\n')
    assert load_experiment(experiment).column == "test_f1"
