#!/usr/bin/env bash
# The GPU check, for a GPU machine without internet (Python 3.12 with torch, numpy, pandas and
# pytest; no flwr, spikingjelly, flwr-datasets or diffusers): install those from .whl/
# (scripts/gpu-wheels.sh fetched them here beforehand), then, in at most 8 minutes, run
# experiments/gpu_check.py: the `gpu` tests, a SuperLink and two SuperNodes sharing the GPU
# (3 rounds of SFedCA on Fashion-MNIST), and the spiking-vs-ANN step timings. Every figure goes
# to OUT_DIR/gpu-check.json; then DDA at paper scale, to OUT_DIR/dda-paper-scale.json. Where torch sees no GPU, the CUDA parts are skipped, saying so.
#   scripts/gpu-check.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: scripts/gpu-check.sh OUT_DIR}
PY=${PYTHON:-python3}
if ! "$PY" -c "import flwr, spikingjelly, diffusers, flwr_datasets" 2>/dev/null; then
  [ -d .whl ] || { echo "flwr and friends are missing and there is no .whl/: run scripts/gpu-wheels.sh where pip works"; exit 2; }
  SITE=$(mktemp -d /tmp/spikefed-site-XXXX)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DATA=data-cache
[ -d .whl/data/FashionMNIST ] && DATA="$PWD/.whl/data"   # else Debian's files, where installed
timeout 480 "$PY" -m experiments.gpu_check "$OUT" --data-dir "$DATA"
# DDA at paper scale (issue 24): 28x28 Fashion-MNIST, a ResNet teacher, about 5 minutes
timeout 420 "$PY" -m experiments.gpu_check "$OUT" --data-dir "$DATA" --dda || echo "DDA at paper scale did not finish"
