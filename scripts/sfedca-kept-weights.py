"""After an SFedCA simulation, how many virtual nodes still hold weights in their node state
(``context.state``), and how many bytes: the models kept by candidates that were not chosen
(issue 25). Runs in-process and reads the engine's node contexts when the run has ended.

    PYTHONPATH=<checkout> .venv/bin/python scripts/sfedca-kept-weights.py '<run config as JSON>'

The checkout is the code that runs (e.g. one before train.discard, 0680923^).
"""

import json
import sys

from flwr.app import ArrayRecord
from flwr.server.superlink.fleet.vce import vce_api

stores = {}
register = vce_api._register_node_info_stores


def keep_stores(*args, **kwargs):
    stores.update(out := register(*args, **kwargs))
    return out


vce_api._register_node_info_stores = keep_stores

from experiments.simulation import resolve, simulate  # noqa: E402 (after the engine is patched)

simulate(resolve(json.loads(sys.argv[1])))
contexts = [info.context for store in stores.values() for info in store.run_infos.values()]
held = [[a for r in c.state.values() if isinstance(r, ArrayRecord) for a in r.values()] for c in contexts]
print(json.dumps({"nodes": len(contexts), "nodes_holding_arrays": sum(1 for h in held if h),
                  "bytes_held": sum(len(a.data) for h in held for a in h),
                  "state_keys": sorted({k for c in contexts for k in c.state.keys()})}))
