"""Find the federation's clients: which partition each SuperNode holds, and its size."""

from __future__ import annotations

import time
from logging import INFO

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.common import log
from flwr.serverapp import Grid

from core.validation import error_line
from data import partition_sizes
from server import simulation_engine
from server.config import KEYS, ConfigError, RunConfig
from strategies import ClientInfo

ASKED_IN_SIMULATION = 64  # nodes queried when the engine's table gives the rest


def discover_clients(grid: Grid, cfg: RunConfig, timeout: float = 600.0) -> dict[int, ClientInfo]:
    """Every node's partition and size, until all ``num-partitions`` clients are known.

    In a simulation started by SpikeFed (server/simulation_engine.py) they come from the
    engine's own node -> partition table; only the first :data:`ASKED_IN_SIMULATION`
    nodes are asked, which checks the table, shows that the ClientApp starts and waits
    for its first processes. Otherwise every connected node is asked (a `query`
    message); nodes that join later are asked when they appear.

    Raises ConfigError when a node's partitioning disagrees with the run config.
    """
    if simulation_engine.installed():
        return simulated_clients(grid, cfg, timeout)
    clients: dict[int, ClientInfo] = {}
    while len(clients) < cfg.num_partitions:
        new = [n for n in grid.get_node_ids() if n not in clients]
        for node, info in ask(grid, cfg, new, timeout).items():
            client = ClientInfo(node, int(info["partition-id"]), int(info["num-examples"]))
            if any(c.partition_id == client.partition_id for c in clients.values()):
                raise ConfigError(f"two nodes hold partition-id={client.partition_id}; each needs its own")
            clients[node] = client
        if len(clients) < cfg.num_partitions:
            log(INFO, "Waiting for clients: %d of %d known", len(clients), cfg.num_partitions)
            time.sleep(1.0)
    return clients


def simulated_clients(grid: Grid, cfg: RunConfig, timeout: float) -> dict[int, ClientInfo]:
    """The clients of the running simulation engine, once it has started all its nodes;
    their sizes are the partitions' (the same arrays the clients load)."""
    deadline = time.monotonic() + timeout
    while True:
        table = simulation_engine.partition_table()
        nodes = list(grid.get_node_ids())
        if table and nodes and all(n in table for n in nodes):
            nodes.sort(key=table.__getitem__)  # the first asked: the lowest partition ids
            break
        if time.monotonic() > deadline:
            raise ConfigError(f"the simulation engine started no nodes within {timeout:.0f} s")
        time.sleep(0.1)
    for node, info in ask(grid, cfg, nodes[:ASKED_IN_SIMULATION], timeout).items():
        if int(info["partition-id"]) != table[node]:
            raise RuntimeError(f"node {node} holds partition {info['partition-id']}, the simulation engine "
                               f"says {table[node]}: Flower's engine changed, SpikeFed's reading of it is out of date")
    sizes = partition_sizes(cfg)
    return {n: ClientInfo(n, table[n], sizes[table[n]]) for n in nodes}


def ask(grid: Grid, cfg: RunConfig, nodes: list[int], timeout: float) -> dict[int, dict]:
    """Node -> its answer to a `query` (partition-id, num-partitions, num-examples).
    ConfigError when a node's ClientApp fails or was started for other partitions."""
    record = RecordDict({"config": ConfigRecord(cfg.for_clients(KEYS))})
    messages = [Message(record, dst_node_id=n, message_type=MessageType.QUERY) for n in nodes]
    answers = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            raise ConfigError(f"the client on node {node} failed to start: {error_line(reply.error.reason)}")
        info = reply.content["info"]
        if info["num-partitions"] != cfg.num_partitions:
            raise ConfigError(
                f"num-partitions={cfg.num_partitions} but node {node} was started with "
                f"num-partitions={info['num-partitions']}; in simulation pass "
                f"--federation-config \"num-supernodes={cfg.num_partitions}\" to flwr run, "
                f"or start each SuperNode with --node-config "
                f"\"partition-id=<i> num-partitions={cfg.num_partitions}\""
            )
        answers[node] = info
    return answers
