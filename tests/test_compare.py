"""`spikefed compare`: the experiment file, the summary arithmetic, and the smoke grid end to end."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from experiments.grid import load_experiment
from experiments.report import TIMING_COLUMNS, rounds_to_target, summarise
from server.config import ConfigError, clients_per_round

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
    ('metric = "fid"', {}, "metric='fid' is unknown; accepted: accuracy, mse, loss"),
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
    cmd = [sys.executable, "-m", "experiments", "compare", str(SMOKE), "--set", f"results-dir={results}",
           "--set", "local-epochs=1", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One uninterrupted run of smoke.toml."""
    results = tmp_path_factory.mktemp("uninterrupted")
    finish(compare(results=results))
    return results / "smoke"


@pytest.mark.slow
def test_smoke_grid_writes_runs_summary_plots_and_report(smoke_run):
    experiment = load_experiment(SMOKE)
    summary = pd.read_csv(smoke_run / "summary.csv")
    assert len(summary) == len(experiment.strategies) * len(experiment.partitions)
    assert set(summary["strategy"]) == set(experiment.strategies)
    assert summary["final_accuracy_mean"].between(0, 1).all()
    runs = pd.read_csv(smoke_run / "runs.csv")
    rounds = experiment.cells()[0].config.num_server_rounds
    assert len(runs) == len(experiment.cells()) * rounds
    assert (runs.groupby(["strategy", "seed"])["round"].max() == rounds).all()
    # SFedCA trains a candidate set larger than the aggregated set; random trains what it aggregates
    updates = summary.set_index("strategy")["client_updates_mean"]
    assert updates["sfedca"] > updates["random"] == rounds * clients_per_round(experiment.cells()[0].config)
    pngs = sorted(smoke_run.glob("*.png"))
    assert {p.name for p in pngs} == {"rounds-to-target.png"} | {f"accuracy-{p}.png" for p in experiment.partitions}
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(png).shape
        assert height > 100 and width > 100
    report = (smoke_run / "report.md").read_text()
    assert "| partition" in report and all(f"({p.name})" in report for p in pngs)


@pytest.mark.slow
def test_interrupted_grid_resumes_to_the_same_summary(smoke_run, tmp_path):
    experiment = load_experiment(SMOKE, {"results-dir": str(tmp_path)})
    first, second = (tmp_path / "smoke" / "cells" / c.id for c in experiment.cells())
    # Ctrl-C reaches a process whose SIGINT is at its default (a background runner may ignore it)
    proc = compare(results=tmp_path, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while not (first / "cell.json").exists():  # Ctrl-C once the first cell is complete
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    assert not (second / "cell.json").exists()
    finished_at = (first / "cell.json").stat().st_mtime_ns

    listing, _ = finish(compare("--dry-run", results=tmp_path))
    assert f"{first.name}\tcomplete" in listing and f"{second.name}\tto run" in listing

    _, err = finish(compare(results=tmp_path))
    assert "1 of 2 cells already complete" in err
    assert (first / "cell.json").stat().st_mtime_ns == finished_at  # not run again
    # the downlink carries the run config, whose results-dir differs between the two grids
    varying = [*TIMING_COLUMNS, "downlink_bytes_mean"]
    resumed = pd.read_csv(tmp_path / "smoke" / "summary.csv").drop(columns=varying)
    whole = pd.read_csv(smoke_run / "summary.csv").drop(columns=varying)
    pd.testing.assert_frame_equal(resumed, whole)
