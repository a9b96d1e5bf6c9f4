"""Benchmarks behind `spikefed bench` (figures in docs/benchmarks.md).

- orchestration: the same federated training as a plain Python loop and through Flower's
  Ray simulation; steady-state seconds per round and their ratio, start-up apart.
- scale: N virtual clients, 10% per round, as a `spikefed run` subprocess: start-up,
  seconds per round, peak resident memory of the whole process tree (Ray's included).
- selection: each strategy's server-side selection + credit time at N clients.
- spiking: train-step time of the spiking classifier at several T, multi-step and
  single-step mode, against the same-shape ANN.
Every figure is the median of several repetitions.
"""

from __future__ import annotations

import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional, neuron
from torch import nn

from server.config import RunConfig, clients_per_round, load_config


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median seconds of ``fn()``; on CUDA each call is waited for (kernels run asynchronously)."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- orchestration ------------------------------------------------------------------------

def bare_rounds(cfg: RunConfig) -> list[float]:
    """Seconds per round of the simulation's work without Flower or Ray: the same client
    choice, the same local update per client, FedAvg and the server's evaluation."""
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from clients.app import global_model, local_update
    from data import partition_sizes, split_of
    from models import get_workload
    from strategies import STRATEGIES
    from strategies.base import ClientInfo

    torch.set_num_threads(max(1, int(cfg.num_cpus)))
    torch.manual_seed(cfg.seed)
    workload = get_workload(cfg.workload)
    split = split_of(cfg)
    clients = {pid: ClientInfo(pid, pid, n) for pid, n in enumerate(partition_sizes(cfg))}
    model = workload.initial_model(cfg, split.spec)
    strategy = STRATEGIES[cfg.strategy].from_config(cfg, clients, [name for name, _ in model.named_buffers()])
    state = model.state_dict()
    times = []
    for server_round in range(1, cfg.num_server_rounds + 1):
        start = time.perf_counter()
        replies = []
        for client in strategy.select(server_round, list(clients.values())):
            arrays, metrics = local_update(cfg, client.partition_id, global_model(cfg, state), server_round)
            replies.append(RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": metrics["num-examples"]})}))
        state = aggregate_arrayrecords(replies, "num-examples").to_torch_state_dict()
        model.load_state_dict(state)
        workload.evaluate(model, (split.x_test, split.y_test), cfg)
        workload.firing_rates(model, (split.x_test, split.y_test), cfg)
        times.append(time.perf_counter() - start)
    return times


def orchestration(settings: dict, repeats: int = 2) -> dict:
    """Bare loop vs Flower + Ray on ``settings``, alternately ``repeats`` times each; rounds
    after the first of each run are steady state. This machine's speed drifts by 10-30%
    between minutes, so with one actor the simulation's rounds are also set against the
    compute inside them (the clients' own timing of their work plus the server's
    evaluation, from rounds.csv): the same ratio, measured in the same seconds."""
    from experiments.simulation import read_rounds, resolve, simulate

    # The loop runs in a thread of its own, so that its OpenMP thread team ends with it. A
    # team left on the main thread makes libgomp stop spin-waiting in every other team, and
    # the ServerApp thread's evaluation then runs at one thread's speed (docs/benchmarks.md).
    bare, simulated, in_run, wall = [], [], [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            launch = resolve({**settings, "results-dir": tmp, "run-name": f"bench{i}"})
            cfg = launch.cfg
            with ThreadPoolExecutor(1) as thread:
                bare.append(thread.submit(bare_rounds, cfg).result()[1:])
            start = time.perf_counter()
            rows = read_rounds(simulate(launch))
            wall += time.perf_counter() - start - sum(float(r["seconds"]) for r in rows)
            simulated.append([float(r["seconds"]) for r in rows[1:]])
            in_run += [float(r["seconds"]) / (float(r["client_seconds"]) + float(r["eval_seconds"])) for r in rows[1:]]
    bare_steady = statistics.median(t for run in bare for t in run)
    sim_steady = statistics.median(t for run in simulated for t in run)
    one_actor = cfg.num_cpus >= (os.cpu_count() or 1)  # else the clients' seconds overlap
    return {"clients": cfg.num_partitions, "per_round": clients_per_round(cfg), "rounds": cfg.num_server_rounds,
            "num_cpus": cfg.num_cpus, "repeats": repeats, "bare_s_per_round": bare_steady,
            "simulation_s_per_round": sim_steady, "ratio": sim_steady / bare_steady,
            "bare_per_repeat": " ".join(f"{statistics.median(b):.2f}" for b in bare),
            "simulation_per_repeat": " ".join(f"{statistics.median(s):.2f}" for s in simulated),
            "in_run_ratio": statistics.median(in_run) if one_actor else "",
            "simulation_startup_and_shutdown_s": wall / repeats}


# --- scale ----------------------------------------------------------------------------------

def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of ``process`` and all its descendants."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def scale(settings: dict, timeout: float = 3600) -> dict:
    """One `spikefed run` subprocess; its rounds from rounds.csv, its tree's peak memory and
    its memory as each round ends (does it grow with the rounds?).
    The partitions are computed (or read from data-dir's cache) here first and timed apart:
    the first 100,000-partition split takes minutes, every later run reads it."""
    from data import partition_sizes
    from experiments.simulation import read_rounds

    start = time.perf_counter()
    partition_sizes(load_config(settings))
    partitioning = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        sets = [a for k, v in {**settings, "results-dir": tmp, "run-name": "scale"}.items()
                for a in ("--set", f"{k}={v}")]
        start = time.perf_counter()
        # stderr to a file: a pipe read only at the end fills (64 KiB) with the INFO lines of a
        # 2,000-candidate round and blocks the ServerApp in its next log call
        with (Path(tmp) / "stderr.txt").open("w+") as log:
            proc = subprocess.Popen([sys.executable, "-m", "experiments", "run", *sets],
                                    stdout=subprocess.DEVNULL, stderr=log, text=True)
            watched, peak, by_round = psutil.Process(proc.pid), 0, []
            rounds_csv = Path(tmp) / "scale" / "rounds.csv"
            while proc.poll() is None:
                rss = tree_rss(watched)
                peak = max(peak, rss)
                if rounds_csv.exists() and len(rounds_csv.read_text().splitlines()) - 1 > len(by_round):
                    by_round.append(rss)  # the tree's resident memory as a round ends
                if time.perf_counter() - start > timeout:
                    proc.kill()
                    raise TimeoutError(f"scale run with {settings} exceeded {timeout} s")
                time.sleep(0.25)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                log.seek(0)
                raise RuntimeError(f"scale run failed: {log.read()[-2000:]}")
        rounds = [float(r["seconds"]) for r in read_rounds(Path(tmp) / "scale")]
    return {"clients": settings["num-partitions"], "per_round": int(settings["num-partitions"] * settings["fraction-train"]),
            "dataset": settings["dataset"], "partitioning_s": partitioning, "startup_s": wall - sum(rounds), "s_per_round": statistics.median(rounds),
            "peak_rss_gib": peak / 2**30, "rss_by_round_gib": [round(r / 2**30, 3) for r in by_round], "wall_s": wall}


# --- message delivery -------------------------------------------------------------------

def linkstate_federation(nodes: int):
    """Flower's in-memory LinkState with one run and ``nodes`` virtual nodes registered as
    its simulation engine registers them; returns (state, grid, node id -> partition id)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.proto.task_pb2 import Task  # pylint: disable=no-name-in-module
    from flwr.server.superlink.fleet.vce.vce_api import _register_nodes
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    run_id, task_id = 7, 11
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = run_id, task_id, SUPERLINK_NODE_ID
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    state = factory.state()
    run = Run.create_empty(run_id=run_id)
    run.primary_task_id, run.federation_id = task_id, NOOP_FEDERATION_ID
    state.run_ids[run_id] = RunRecord(run=run)
    state.task_store[task_id] = Task(task_id=task_id, run_id=run_id)
    mapping = _register_nodes(nodes, factory)
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    return state, grid, mapping


def delivery(nodes: list[int], messages: int, sample: int = 1000) -> list[dict]:
    """Seconds of one delivery pass with min(``messages``, N / 10) waiting for as many nodes out of N:
    Flower's (``state.get_message_ins(node, limit=1)`` for every node; timed over ``sample``
    nodes that hold none and scaled to N, each such call checks every stored message) and
    SpikeFed's (server/simulation_engine.py: one scan)."""
    from flwr.app import Message, RecordDict

    from server.simulation_engine import undelivered

    rows = []
    for n in nodes:
        state, grid, mapping = linkstate_federation(n)
        ids, waiting = list(mapping), min(messages, n // 10)
        grid.push_messages([Message(RecordDict(), dst_node_id=i, message_type="train") for i in ids[:waiting]])
        idle = ids[waiting:][-sample:]
        start = time.perf_counter()
        for node in idle:
            state.get_message_ins(node_id=node, limit=1)
        flower = (time.perf_counter() - start) * n / len(idle)
        start = time.perf_counter()
        delivered = len(undelivered(state, mapping))
        rows.append({"nodes": n, "messages": waiting, "delivered": delivered, "flower_pass_s": flower,
                     "spikefed_pass_s": time.perf_counter() - start})
    return rows


# --- selection ------------------------------------------------------------------------------

LAYERS = {"lif1": 16, "lif2": 32, "lif_out": 10}  # SpikingCNN's spiking layers: rates per channel/neuron


def selection(num_clients: int, fraction: float, repeats: int) -> list[dict]:
    """Per strategy: median ms of select() plus the credit step on the replies it asks for.
    Replies carry random firing rates and losses; Power-of-Choice's query round trip is
    network time and not included (its candidate draw and ranking are). The model is one
    weight, so DivFL's distances between updates cost next to nothing here (with the real
    model they are m x m distances over its parameters)."""
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from strategies import STRATEGIES
    from core.protocol import FIRING_AFTER, FIRING_BEFORE, firing_metrics
    from strategies.base import ClientInfo

    TaskIdentity.run_id = TaskIdentity.node_id = TaskIdentity.task_id = 1  # messages made outside a run
    rng = np.random.default_rng(0)
    clients = {pid: ClientInfo(pid, pid, int(n)) for pid, n in enumerate(rng.integers(5, 500, num_clients))}
    pool = list(clients.values())
    cfg = load_config({"num-partitions": num_clients, "fraction-train": fraction})
    arrays = ArrayRecord({"w": torch.zeros(1)})

    def reply(client: ClientInfo) -> Message:
        metrics = {"num-examples": client.num_examples, "loss-sq-mean": float(rng.random()),
                   **firing_metrics(FIRING_BEFORE, {k: rng.random(n).tolist() for k, n in LAYERS.items()}),
                   **firing_metrics(FIRING_AFTER, {k: rng.random(n).tolist() for k, n in LAYERS.items()})}
        sent = Message(RecordDict(), dst_node_id=client.node_id, message_type="train")
        return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}), reply_to=sent)

    replies = {c.partition_id: reply(c) for c in pool}
    losses = {c.partition_id: float(rng.random()) for c in pool}
    out = []
    for name in sorted(STRATEGIES):
        strategy = STRATEGIES[name].from_config(cfg, clients)
        strategy._global_arrays = arrays  # what configure_train sets in a round (DivFL's updates are against it)
        rounds = iter(range(1, 10**6))
        for _ in range(3):  # a few rounds first, so that history-based rules have history
            chosen = step(strategy, next(rounds), pool, replies, losses)
        ms = 1000 * median_time(lambda: step(strategy, next(rounds), pool, replies, losses), repeats, warmup=0)
        out.append({"strategy": name, "clients": num_clients, "selected": len(chosen), "ms_per_round": ms})
    return out


def balance(m: int, k: int, seeds: int) -> list[dict]:
    """SFedCA's greedy search as shipped (batches beyond GREEDY_STEPS rows) against one row
    per full scoring and against k random rows: the L1 distance to class-uniform of the
    chosen clients' pooled profile, and ms, on label-skewed candidates (Dirichlet profiles
    over 10 classes, 5-500 examples each); means over ``seeds``."""
    from strategies.sfedca import GREEDY_STEPS, greedy_subset, imbalance, profiles

    rows = []
    for alpha in (0.1, 1.0):
        found, ms = {"batched": [], "one per step": [], "random": []}, {"batched": [], "one per step": []}
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            weights = rng.integers(5, 500, m).astype(float)
            p = profiles(rng.dirichlet(np.full(10, alpha), m)) * weights[:, None]
            picks = {}
            for name, steps in (("batched", GREEDY_STEPS), ("one per step", k)):
                start = time.perf_counter()
                picks[name] = greedy_subset(p, weights, k, steps=steps)
                ms[name].append(1000 * (time.perf_counter() - start))
            picks["random"] = rng.choice(m, k, replace=False)
            for name, chosen in picks.items():
                found[name].append(float(imbalance(p[chosen].sum(0) / weights[chosen].sum())))
        rows += [{"dirichlet_alpha": alpha, "candidates": m, "chosen": k, "search": name,
                  "l1_to_uniform": statistics.mean(values), "ms": statistics.mean(ms[name]) if name in ms else ""}
                 for name, values in found.items()]
    return rows


def step(strategy, server_round: int, pool: list, replies: dict, losses: dict) -> list:
    """Selection, then the credit/score step on the chosen clients' replies."""
    from strategies.power_of_choice import PowerOfChoice

    if isinstance(strategy, PowerOfChoice):
        candidates = strategy.candidate_set(server_round, pool)
        chosen = strategy.choose(pool, candidates, {c.partition_id: losses[c.partition_id] for c in candidates})
    else:
        chosen = strategy.select(server_round, pool)
    strategy.choose_aggregated(server_round, [replies[c.partition_id] for c in chosen])
    return chosen


# --- spiking compute --------------------------------------------------------------------------

def same_shape_ann(snn: nn.Module) -> nn.Module:
    """The spiking CNN with each LIF neuron replaced by a ReLU, in single-step layers."""
    ann = copy.deepcopy(snn.net)
    functional.set_step_mode(ann, "s")
    for name, module in ann.named_children():
        if isinstance(module, neuron.BaseNode):
            setattr(ann, name, nn.ReLU())
    return ann


def train_step(model: nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """One training step of ``model`` on ``loss()`` (backward, Adam), its neurons reset after."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        functional.reset_net(model)
    return step


def spiking(timesteps: list[int], batch_size: int, image_size: int, repeats: int,
            device: torch.device = torch.device("cpu")) -> list[dict]:
    """Median ms of one training step (forward, backward, Adam) per model and mode."""
    from models.spiking_cnn import SpikingCNN

    torch.manual_seed(0)
    x = torch.rand(batch_size, 1, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def trainer(model: nn.Module, forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        return train_step(model, lambda: F.mse_loss(forward(), F.one_hot(y, 10).float()))

    base = SpikingCNN(1, image_size, 10, 1).to(device)
    ann = same_shape_ann(base)
    ann_ms = 1000 * median_time(trainer(ann, lambda: ann(x).softmax(1)), repeats, warmup=3, device=device)
    rows = [{"model": "ANN (same shape)", "T": 1, "mode": "-", "ms_per_step": ann_ms, "ratio_to_T_x_ann": 1.0}]
    for t in timesteps:
        snn = SpikingCNN(1, image_size, 10, t).to(device)
        multi = 1000 * median_time(trainer(snn, lambda: snn(x).mean(0)), repeats, warmup=3, device=device)
        single_net = copy.deepcopy(snn.net)
        functional.set_step_mode(single_net, "s")
        single = 1000 * median_time(trainer(single_net, lambda: torch.stack([single_net(x) for _ in range(t)]).mean(0)),
                                    repeats, warmup=3, device=device)
        rows += [{"model": "spiking CNN", "T": t, "mode": mode, "ms_per_step": ms, "ratio_to_T_x_ann": ms / (t * ann_ms)}
                 for mode, ms in (("multi-step", multi), ("single-step", single))]
    return rows


def vae_steps(timesteps: int, batch_size: int, image_size: int, repeats: int,
              device: torch.device = torch.device("cpu")) -> list[dict]:
    """Median ms of one training step (loss, backward, Adam) of ESVAE and of the same-shape ANN VAE."""
    from models.esvae import ESVAE, AnnVAE

    torch.manual_seed(0)
    x = torch.rand(batch_size, 1, image_size, image_size, device=device)
    rows = []
    for name, model in (("ANN VAE (same shape)", AnnVAE(1, image_size, 32)),
                        ("ESVAE", ESVAE(1, image_size, 32, timesteps))):
        model = model.to(device)
        step = train_step(model, lambda model=model: model.loss(x)[0])
        ms = 1000 * median_time(step, repeats, warmup=2, device=device)
        rows.append({"model": name, "T": timesteps if name == "ESVAE" else 1, "mode": "multi-step",
                     "ms_per_step": ms, "image_size": image_size, "batch_size": batch_size})
    return rows

