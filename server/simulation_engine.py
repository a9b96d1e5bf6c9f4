"""Flower's simulation engine (the VCE) at 100,000 virtual SuperNodes.

Flower 1.42 hands messages to the engine's workers from one thread
(``vce_api.add_messages_to_queue``) that, every 0.1 s, asks the in-memory LinkState for
each node's next message in turn, and the LinkState answers each question by checking
every stored message: one pass costs nodes x stored messages, 10^8 checks with 100,000
nodes and 1,000 messages in flight (docs/benchmarks.md has the profile).
:func:`install` replaces that one function with :func:`deliver_messages`, which checks
the stored messages once per pass and delivers the same ones (the same validity checks,
at most one message per node per pass, marked delivered as Flower marks them).

The engine also knows which partition each virtual node holds; the ServerApp runs in the
same process, so :func:`partition_table` gives it that table instead of one ``query``
message per node (server/discovery.py).
"""

from __future__ import annotations

import threading
from queue import Queue

from flwr.app import Message
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.linkstate import InMemoryLinkState, LinkState
from flwr.supercore.date import now

FLOWER_POLLER = vce_api.add_messages_to_queue
_table: dict[int, int] = {}  # node id -> partition id of the running engine


def install() -> None:
    """Use :func:`deliver_messages` in every simulation this process starts from now on."""
    vce_api.add_messages_to_queue = deliver_messages


def installed() -> bool:
    return vce_api.add_messages_to_queue is deliver_messages


def partition_table() -> dict[int, int]:
    """Node id -> partition id of the running engine (empty before it starts and after it stops)."""
    return dict(_table)


def deliver_messages(state: LinkState, queue: Queue[Message], nodes_mapping: dict[int, int],
                     f_stop: threading.Event) -> None:
    """Flower's ``add_messages_to_queue`` in one pass over the stored messages, not one per node."""
    if not isinstance(state, InMemoryLinkState):
        FLOWER_POLLER(state, queue, nodes_mapping, f_stop)
        return
    _table.clear()
    _table.update(nodes_mapping)
    try:
        while not f_stop.is_set():
            for msg in undelivered(state, nodes_mapping):
                queue.put(msg)
            f_stop.wait(0.1)
    finally:
        _table.clear()


def undelivered(state: InMemoryLinkState, nodes: dict[int, int]) -> list[Message]:
    """The oldest undelivered message of each node in ``nodes``, now marked delivered (what
    ``state.get_message_ins(node_id, limit=1)`` returns, for all nodes at once)."""
    with state.lock:
        waiting = [i for i, m in state.message_ins_store.items()
                   if m.metadata.delivered_at == "" and m.metadata.dst_node_id in nodes]
        state._check_stored_messages(set(waiting))  # drops expired messages, as get_message_ins does
        first: dict[int, Message] = {}
        for msg_id in waiting:
            if (msg := state.message_ins_store.get(msg_id)) is not None:
                first.setdefault(msg.metadata.dst_node_id, msg)
        delivered_at = now().isoformat()
        for msg in first.values():
            msg.metadata.delivered_at = delivered_at
    return list(first.values())
