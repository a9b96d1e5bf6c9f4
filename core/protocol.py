"""The wire protocol between a selection strategy and a ClientApp: record keys and message kinds.

A train reply's MetricRecord carries ``num-examples`` and, for the strategies that need
them, firing statistics (see ``docs/protocol.md``):

- ``firing-before/<depth>/<layer>`` and ``firing-after/<depth>/<layer>``: each spiking
  layer's firing rates (a list of floats in [0, 1]) on the local training data, with the
  received model and with the trained one; the two-digit depth keeps the layers' order,
  the last is the output layer;
- ``class-intensity-before`` / ``class-intensity-after``: per class, the network's mean
  firing rate on the local samples of that class (0 for absent classes);
- ``loss-sq-mean``: mean squared per-sample training loss (Oort's statistical utility);
- ``energy-snn`` / ``energy-ann``: joules the client estimates for its local work (optional);
- ``compute-seconds``: wall seconds its local work took (optional; summed per round).

A train config may carry Flower's FedProx key ``proximal-mu``: the client adds
mu/2 ||w - w_t||^2 to its local loss, w_t the received weights.

A train config with ``two-phase = true`` asks the client to keep its trained weights and
reply with the MetricRecord only; an ``UPLOAD`` message for the same ``server-round``
then asks for the weights; a ``DISCARD`` message tells a candidate that was not chosen to
drop them. A ``query`` message with a model asks for its ``loss`` on the local data
(Power-of-Choice), or, when its config says ``query-statistics = true``, for the received
model's firing statistics on the local data instead (``firing-before/``,
``class-intensity-before``: one forward pass, no training; SFedCA's ``when = before``).

A train reply may also carry a ConfigRecord ``executor`` saying where the update ran:
``host`` (the Ray node id inside a Ray simulation, else the host name) and ``device``
(``cpu``, ``cuda:0``, ...); SpikeFed's results count them per round.
"""

from __future__ import annotations

from flwr.app import MessageType

FIRING_BEFORE = "firing-before/"
FIRING_AFTER = "firing-after/"
CLASS_BEFORE = "class-intensity-before"
CLASS_AFTER = "class-intensity-after"
LOSS_SQ_MEAN = "loss-sq-mean"
NUM_EXAMPLES = "num-examples"
ENERGY_KEYS = ("energy-snn", "energy-ann")
COMPUTE_SECONDS = "compute-seconds"
EXECUTOR = "executor"  # train reply ConfigRecord: where the update ran (host, device)

SERVER_ROUND = "server-round"  # train/evaluate config: the round being run
TWO_PHASE_KEY = "two-phase"  # train config: reply with metrics only, keep the weights for the upload
FAULT_KEY = "fault"  # train config: the fault a client is told to inject (empty = behave)
QUERY_STATISTICS = "query-statistics"  # query config: reply with the model's firing statistics, not its loss
CLIPPING_NORM = "clipping_norm"  # train config (Flower's client-side DP): clip the update to this L2 norm
PROXIMAL_MU = "proximal-mu"  # train config (Flower's FedProx): weight of the proximal term in the local loss
MESSAGE_KEYS = (SERVER_ROUND, TWO_PHASE_KEY, FAULT_KEY, QUERY_STATISTICS, CLIPPING_NORM, PROXIMAL_MU)  # server-added

UPLOAD = f"{MessageType.TRAIN}.upload"  # second phase: a chosen client sends the weights it kept
DISCARD = f"{MessageType.TRAIN}.discard"  # second phase: a candidate not chosen drops the weights it kept


def firing_metrics(prefix: str, rates: dict[str, list[float]]) -> dict[str, list[float]]:
    """Metric entries ``<prefix><depth>/<layer>``: records travel with sorted keys, so the
    two-digit depth keeps the layers' order (the last is the output layer)."""
    return {f"{prefix}{i:02d}/{name}": rates[name] for i, name in enumerate(rates)}


def statistic_keys(keys: tuple[str, ...], statistic: str) -> dict[str, str]:
    """The metric keys, among ``keys``, of SFedCA's statistic (``output``: the output layer's
    rates, the deepest ``firing-*`` entry; ``class``: the class-wise intensity), by phase
    (``before``, ``after``); a phase the reply lacks is absent."""
    if statistic == "class":
        return {p: k for p, k in (("before", CLASS_BEFORE), ("after", CLASS_AFTER)) if k in keys}
    found = {p: max((k for k in keys if k.startswith(prefix)), default=None)
             for p, prefix in (("before", FIRING_BEFORE), ("after", FIRING_AFTER))}
    return {p: k for p, k in found.items() if k}
