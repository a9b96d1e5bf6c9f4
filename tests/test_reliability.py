"""Faults, bad replies and crashes: nothing bad is aggregated, nothing done is lost."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import failure_tail
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from clients import faults as client_faults
from core import faults
from core.validation import REASONS, check_train_reply
from experiments.simulation import read_rounds, resolve, simulate
from server.config import load_config
from strategies import STRATEGIES
from strategies.base import ClientInfo
from strategies.settings import Reliability

ROOT = Path(__file__).resolve().parents[1]


# --- fault assignment ------------------------------------------------------------------

def test_fault_assignment_is_seeded_disjoint_and_sized():
    pids = list(range(10))
    a = faults.assign(np.random.default_rng(1), pids, 0.3, 0.1, 0.1)
    assert a == faults.assign(np.random.default_rng(1), pids, 0.3, 0.1, 0.1)
    kinds = [f.split(":")[0] for f in a.values()]
    assert sorted(kinds) == ["corrupt", "crash", "crash", "crash", "straggle"]
    assert a != faults.assign(np.random.default_rng(2), pids, 0.3, 0.1, 0.1)
    assert faults.assign(np.random.default_rng(1), pids, 0, 0, 0) == {}


# --- validation fuzz: malformed replies straight into the validator and every strategy ---

def reference() -> ArrayRecord:
    return ArrayRecord({"w": torch.zeros(3, 2), "b": torch.zeros(2), "steps": torch.zeros((), dtype=torch.long)})


def good_parts() -> tuple[dict, dict]:
    arrays = {"w": torch.rand(3, 2), "b": torch.rand(2), "steps": torch.tensor(4)}
    metrics = {"num-examples": 12, "train-loss": 0.5, "loss-sq-mean": 0.3,
               "firing-before/00/hidden": [0.2, 0.1], "firing-before/01/out": [0.3, 0.0],
               "firing-after/00/hidden": [0.4, 0.1], "firing-after/01/out": [0.2, 0.6]}
    return arrays, metrics


def malformed_contents(rng: np.random.Generator, n: int) -> list[RecordDict]:
    """Every injected corruption, hand-made ones, and random combinations of them."""
    def injected(kind):
        arrays, metrics = good_parts()
        client_faults.corrupt(f"corrupt:{kind}", arrays, metrics)
        return RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})

    def edited(**changes):
        arrays, metrics = good_parts()
        for key, value in changes.items():
            (arrays if key in arrays else metrics)[key] = value
        return RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})

    arrays, metrics = good_parts()
    handmade = [
        RecordDict(),
        RecordDict({"metrics": MetricRecord(metrics)}),
        RecordDict({"arrays": ArrayRecord(arrays)}),
        RecordDict({"arrays": ArrayRecord(arrays), "again": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}),
        RecordDict({"arrays": ArrayRecord({**arrays, "extra": torch.zeros(1)}), "metrics": MetricRecord(metrics)}),
        edited(w=torch.rand(2, 3)), edited(b=torch.rand(2).half()), edited(steps=torch.tensor(4.0)),
        edited(**{"num-examples": -3}), edited(**{"num-examples": 2.5}), edited(**{"train-loss": math.nan}),
        edited(**{"firing-before/00/hidden": [-0.1, 0.2]}), edited(**{"firing-after/01/out": [math.inf, 0.1]}),
    ]
    contents = [injected(kind) for kind in faults.CORRUPTIONS] + handmade
    while len(contents) < n:  # random pairs of corruptions on one reply
        arrays, metrics = good_parts()
        for kind in rng.choice(faults.CORRUPTIONS, size=2, replace=False):
            client_faults.corrupt(f"corrupt:{kind}", arrays, metrics)
        contents.append(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}))
    return contents


def test_the_validator_rejects_every_malformed_reply_and_passes_a_good_one():
    ref = reference()
    arrays, metrics = good_parts()
    assert check_train_reply(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)}), ref) is None
    for content in malformed_contents(np.random.default_rng(0), 200):
        rejection = check_train_reply(content, ref)
        assert rejection is not None and rejection.reason in REASONS


class UploadGrid:
    """The transport of a two-phase round's second phase in a unit test: every upload
    request is answered by ``answer(node_id)``; the strategy and validator are the real ones."""

    def __init__(self, answer):
        self.answer = answer

    def send_and_receive(self, messages, timeout=None):
        return [self.answer(m.metadata.dst_node_id) for m in messages]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_no_strategy_aggregates_a_malformed_reply(name, task_identity):
    contents = malformed_contents(np.random.default_rng(1), 60)
    clients = {1000 + i: ClientInfo(1000 + i, i, 12) for i in range(len(contents) + 2)}
    cfg = load_config({"num-partitions": len(clients), "fraction-train": 0.5})
    strategy = STRATEGIES[name].from_config(cfg, clients)
    strategy._global_arrays, strategy._sent = reference(), list(clients.values())

    def reply(node_id, content):
        sent = Message(RecordDict({"config": ConfigRecord({})}), dst_node_id=node_id, message_type="train")
        return Message(content, reply_to=sent)

    replies = [reply(1000 + i, c) for i, c in enumerate(contents)]
    replies.append(Message(Error(code=0, reason="the ClientApp raised"),
                           reply_to=Message(RecordDict(), dst_node_id=1000 + len(contents), message_type="train")))
    # A two-phase strategy's first phase takes statistics only: every reply above carrying
    # weights is malformed there; the one metrics-only reply is chosen and then uploads junk.
    strategy._grid = UploadGrid(lambda node_id: reply(node_id, contents[-1]))
    arrays, metrics = strategy.aggregate_train(1, replies)  # the last client never answered
    assert arrays is None and metrics is None and not strategy.record.model_updated
    assert strategy.record.selected == []
    reasons = {pid: r.reason for pid, r in strategy.record.rejected.items()}
    assert len(reasons) == len(clients)
    assert reasons[len(contents)] == "error" and reasons[len(contents) + 1] == "timeout"


def test_fewer_valid_replies_than_required_keep_the_model(task_identity):
    clients = {1000 + i: ClientInfo(1000 + i, i, 12) for i in range(3)}
    strategy = STRATEGIES["random"](clients=clients, fraction_train=1e-6, min_train_nodes=3, seed=0, reliability=Reliability(min_valid_replies=2))
    strategy._global_arrays, strategy._sent = reference(), list(clients.values())
    arrays, metrics = good_parts()
    good = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(metrics)})
    sent = Message(RecordDict(), dst_node_id=1000, message_type="train")
    assert strategy.aggregate_train(1, [Message(good, reply_to=sent)]) == (None, None)
    sent2 = Message(RecordDict(), dst_node_id=1001, message_type="train")
    aggregated, _ = strategy.aggregate_train(1, [Message(good, reply_to=sent), Message(good, reply_to=sent2)])
    assert aggregated is not None and aggregated["steps"].dtype == reference()["steps"].dtype


# --- faults injected in a real simulation ----------------------------------------------------

def counts(cell: str) -> dict[str, int]:
    return {k: int(v) for k, v in (item.split(":") for item in cell.split())} if cell else {}


@pytest.mark.slow
def test_a_run_with_crashing_straggling_and_corrupt_clients_completes(tmp_path):
    """Crashes, a straggler and corrupt replies in a real Ray simulation of two-phase SFedCA
    (a one-phase strategy's replies meet the same validator:
    test_no_strategy_aggregates_a_malformed_reply)."""
    strategy = "sfedca"
    launch = resolve({
        "strategy": strategy, "num-partitions": 10, "fraction-train": 1.0, "num-server-rounds": 2,
        "fault-crash": 0.3, "fault-straggle": 0.1, "fault-corrupt": 0.1, "round-timeout": 20, "local-epochs": 1,
        "num-cpus": 0.5, "results-dir": str(tmp_path), "run-name": "faults",
    })
    directory = simulate(launch)
    rows = read_rounds(directory)
    assert [r["round"] for r in rows] == ["1", "2"]
    for row in rows:
        injected, rejected = counts(row["injected_faults"]), counts(row["rejections"])
        assert injected == {"crash": 3, "straggle": 1, "corrupt": 1}, row
        # the crashes only: round 1's straggler is not asked again while it still works
        # (strategies/messaging.py: busy_nodes), so no upload fails on an older node state
        assert rejected.pop("error") == 3, row
        assert rejected.pop("timeout") == 1, row
        assert sum(rejected.values()) == 1, row  # the corrupt reply, under its reason
        asked = len(row["rejected_clients"].split()) + len(row["selected_clients"].split())
        assert len(row["rejected_clients"].split()) == 5 and int(row["client_updates"]) == asked - 1, row
        assert asked == 10 or (row["round"] == "2" and asked == 9), row
        assert row["model_updated"] == "True" and math.isfinite(float(row["test_loss"]))
    final = torch.load(directory / "checkpoint.pt", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v.float()).all() for v in final.values())


# --- kill -9 mid-run, resume, same weights ---------------------------------------------------

RUN = ["strategy=sfedca", "num-partitions=6", "fraction-train=0.34", "num-server-rounds=3", "local-epochs=1"]


def spikefed(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "experiments", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def sets(*pairs: str) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


@pytest.mark.slow
def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_weights(tmp_path):
    # the reference run in this process; the victim and the resume run as `spikefed` processes
    simulate(resolve({**dict(pair.split("=") for pair in RUN), "results-dir": str(tmp_path), "run-name": "whole"}))

    crashed = tmp_path / "crashed"
    victim = spikefed("run", *sets(*RUN, f"results-dir={tmp_path}", "run-name=crashed"))
    deadline = time.time() + 600
    while not ((crashed / "checkpoint.pt").exists()
               and torch.load(crashed / "checkpoint.pt", weights_only=True)["round"] >= 1):
        assert victim.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = torch.load(crashed / "checkpoint.pt", weights_only=True)["round"]
    assert killed_at < 3

    resumed = spikefed("resume", str(crashed))
    out = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, failure_tail(out)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(crashed / "checkpoint.pt", weights_only=True)
    assert a["round"] == b["round"] == 3
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["strategy"] == b["strategy"]
    rows = read_rounds(crashed)
    assert [r["round"] for r in rows] == ["1", "2", "3"]
    whole_rows = read_rounds(tmp_path / "whole")
    for r, w in zip(rows, whole_rows):
        assert (r["selected_clients"], r["test_accuracy"]) == (w["selected_clients"], w["test_accuracy"])
