#!/usr/bin/env bash
# Prepare what scripts/gpu-check.sh needs on a GPU machine that has no internet (Python 3.12,
# x86-64, its packages listed in scripts/gpu-machine-packages.txt). Run here, where the
# package registry is reachable:
#   .whl/*.whl          flwr, flwr-datasets, spikingjelly, diffusers and what they need, less
#                       what the GPU machine already has (ray is left out: too large to carry;
#                       the check deploys SuperLink and SuperNodes as processes instead)
#   .whl/data/FashionMNIST/raw/   the first 30,000 training and all 10,000 test images of
#                       Fashion-MNIST, as IDX files (Debian's dataset-fashion-mnist; about 18 MB:
#                       DDA at paper scale trains on them, the federation check on 6,000 / 2,000)
# .whl/ is ignored by git; the device tool carries it (64 MiB at most).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=.whl
WANT=(flwr==1.42.0 flwr-datasets==0.6.1 spikingjelly==2.0.0 "diffusers==$($PY -c 'import diffusers; print(diffusers.__version__)')")
TARGET=(--python-version 3.12 --implementation cp --only-binary=:all:
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
rm -rf "$OUT" && mkdir -p "$OUT"

# the whole dependency closure for that Python, from the registry's metadata (no download)
report=$(mktemp)
$PY -m pip install --quiet --dry-run --ignore-installed --target "$(mktemp -d)" --report "$report" "${TARGET[@]}" "${WANT[@]}"
# walk the closure from what we want, not into what the GPU machine has (torch brings its own
# CUDA libraries); uv is left out too: flwr installs app dependencies with it, which the check
# turns off (FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION)
mapfile -t carried < <($PY - "$report" scripts/gpu-machine-packages.txt "${WANT[@]}" <<'PY'
import json, re, sys
from packaging.requirements import Requirement

def norm(name): return re.sub(r"[-_.]+", "-", name).lower()

report, have_file, *want = sys.argv[1:]
items = {norm(i["metadata"]["name"]): i["metadata"] for i in json.load(open(report))["install"]}
have = {norm(l.strip()) for l in open(have_file) if l.strip() and not l.startswith("#")} | {"uv"}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
todo, seen = [norm(Requirement(w).name) for w in want], set()
while todo:
    name = todo.pop()
    if name in seen or name in have or name not in items:
        continue
    seen.add(name)
    print(f"{name}=={items[name]['version']}")
    for spec in items[name].get("requires_dist") or []:
        req = Requirement(spec)
        if req.marker is None or req.marker.evaluate(env):
            todo.append(norm(req.name))
PY
)
$PY -m pip download --quiet --no-deps "${TARGET[@]}" -d "$OUT" "${carried[@]}"
rm -f "$report"

$PY - <<'PY'
"""A Fashion-MNIST subset in torchvision's layout (data/sources.py reads it as data-dir)."""
import gzip
from pathlib import Path

from data.sources import SYSTEM_FASHION_MNIST, read_idx

raw = Path(".whl/data/FashionMNIST/raw")
raw.mkdir(parents=True, exist_ok=True)
for stem, n in (("train-images-idx3-ubyte", 30000), ("train-labels-idx1-ubyte", 30000),
                ("t10k-images-idx3-ubyte", 10000), ("t10k-labels-idx1-ubyte", 10000)):
    source = next(SYSTEM_FASHION_MNIST.glob(stem + "*"))
    array = read_idx(source)[:n]
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(raw / f"{stem}.gz", "wb") as f:
        f.write(header + array.astype("uint8").tobytes())
PY
echo "carried: ${carried[*]}"
du -sh "$OUT" | awk '{print "total: " $1 " in .whl/ (the device tool carries at most 64 MiB)"}'
