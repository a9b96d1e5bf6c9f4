"""Client-selection strategies, registered by name (the run config's `strategy`).

Each is a Flower strategy (a ``FedAvg`` subclass) that also works in any Flower app:
``SFedCA()``, ``Oort(fraction_train=0.1)``... (see ``docs/protocol.md``).
"""

from core.config import choice
from strategies import aggregators, devices, settings, sfedca
from strategies.base import ClientInfo, SelectionStrategy
from strategies.clustered import ClusteredSampling
from strategies.divfl import DivFL
from strategies.oort import Oort
from strategies.power_of_choice import PowerOfChoice
from strategies.random_selection import RandomSelection
from strategies.sfedca import SFedCA
from strategies.spike_diversity import SpikeDiversity

STRATEGIES: dict[str, type[SelectionStrategy]] = {
    "sfedca": SFedCA,
    "random": RandomSelection,
    "power-of-choice": PowerOfChoice,
    "oort": Oort,
    "clustered": ClusteredSampling,
    "spike-diversity": SpikeDiversity,
    "divfl": DivFL,
}

# The run-config keys of strategies/ and their cross-key checks.
KEYS = {"strategy": choice("random", tuple(sorted(STRATEGIES)),
                          meaning="client-selection strategy (registry in `strategies/`)", client=True),
        **settings.KEYS, **aggregators.KEYS, **devices.KEYS,
        **{key: spec for cls in STRATEGIES.values() for key, spec in cls.KEYS.items()}}
CHECKS = (settings.check, sfedca.check, aggregators.check, devices.check)

__all__ = ["CHECKS", "KEYS", "STRATEGIES", "ClientInfo", "ClusteredSampling", "DivFL", "Oort", "PowerOfChoice",
           "RandomSelection", "SFedCA", "SelectionStrategy", "SpikeDiversity"]
