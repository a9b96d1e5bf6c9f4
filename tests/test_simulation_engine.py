"""server/simulation_engine.py against Flower's own per-node delivery, on Flower's in-memory LinkState."""

import threading
import time
from collections import Counter
from queue import Queue

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.server.superlink.fleet.vce import vce_api

from experiments.bench import linkstate_federation as federation
from server import simulation_engine


def push(grid, mapping, plan):
    """Messages to the nodes of partitions ``plan`` (in order), each tagged with its position;
    a negative partition: an already expired message to partition -p - 1."""
    node = {pid: nid for nid, pid in mapping.items()}
    messages = [Message(RecordDict({"c": ConfigRecord({"i": i})}), dst_node_id=node[abs(p) - (p < 0)],
                        message_type="train", ttl=1e-3 if p < 0 else 3600) for i, p in enumerate(plan)]
    grid.push_messages(messages)
    time.sleep(0.01)  # the short-lived ones expire


def delivered(messages, mapping):
    return Counter((mapping[m.metadata.dst_node_id], m.content["c"]["i"]) for m in messages)


def test_one_pass_delivers_what_flowers_per_node_polling_delivers():
    plan = [0, 1, 1, 2, -4, 4, 0, 3, 1]  # partition 1 gets three messages; -4: an expired one to partition 3
    ours, flowers = [], []
    for passes, deliver in ((ours, lambda s, m: simulation_engine.undelivered(s, m)),
                            (flowers, lambda s, m: [x for n in m for x in s.get_message_ins(node_id=n, limit=1)])):
        state, grid, mapping = federation(5)
        push(grid, mapping, plan)
        for _ in range(4):
            batch = deliver(state, mapping)
            assert all(m.metadata.delivered_at for m in batch)
            passes.append(delivered(batch, mapping))
    assert ours == flowers
    # the oldest live message per node (the expired one to partition 3 is dropped), then the next ones
    assert ours == [Counter({(0, 0): 1, (1, 1): 1, (2, 3): 1, (3, 7): 1, (4, 5): 1}), Counter({(0, 6): 1, (1, 2): 1}),
                    Counter({(1, 8): 1}), Counter()]


def test_install_replaces_flowers_poller_and_the_table_lives_while_the_engine_runs():
    state, grid, mapping = federation(3)
    original = vce_api.add_messages_to_queue
    try:
        simulation_engine.install()
        assert simulation_engine.installed() and vce_api.add_messages_to_queue is simulation_engine.deliver_messages
    finally:
        vce_api.add_messages_to_queue = original
    queue, stop = Queue(), threading.Event()
    poller = threading.Thread(target=simulation_engine.deliver_messages, args=(state, queue, mapping, stop))
    poller.start()
    try:
        push(grid, mapping, [2, 0])
        first = queue.get(timeout=5)
        assert simulation_engine.partition_table() == mapping
        assert mapping[first.metadata.dst_node_id] == 2
    finally:
        stop.set()
        poller.join()
    assert simulation_engine.partition_table() == {}
