#!/usr/bin/env bash
# CI's Docker step (.ci/run, after the test suite): start dockerd, build the local base
# image (scripts/make-base-image.sh), run scripts/compose-smoke.sh (the compose deployment:
# TLS, SuperNode authentication, 2 SuperNodes, 2 SFedCA rounds) and stop dockerd again.
# Where Docker cannot be set up here (not root, no docker.io, dockerd does not start, no base
# image), it says why in one line and exits 0: only this step is skipped. A failing build or
# smoke run exits non-zero: CI fails.
set -euo pipefail
cd "$(dirname "$0")/.."
skip() { echo "Docker step skipped: $*"; exit 0; }
start=$SECONDS
[ "$(id -u)" = 0 ] || skip "not running as root (dockerd and debootstrap need it)"
for tool in docker dockerd docker-compose; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install docker.io docker-compose)"
done
dockerd_pid=""
stop_dockerd() {
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
}
trap stop_dockerd EXIT
if ! docker info >/dev/null 2>&1; then
  dockerd >/tmp/spikefed-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 1; done
  docker info >/dev/null 2>&1 || skip "dockerd did not start: $(tail -1 /tmp/spikefed-dockerd.log)"
fi
base=spikefed-base:bookworm
if ! docker image inspect "$base" >/dev/null 2>&1; then
  out=$(scripts/make-base-image.sh "$base" 2>&1) || skip "no base image: $(printf '%s' "$out" | tail -1)"
fi
# the image installs torch from a wheel in $PIP_FIND_LINKS (compose-smoke.sh copies it) or PyTorch's
# CPU index, the rest from pip's index: without them the build cannot start, which is no failure of ours
index=$(python3 -m pip config get global.index-url 2>/dev/null || echo https://pypi.org/simple)
reachable() { python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)" "$1" 2>/dev/null; }
reachable "${index%/}/flwr/" || skip "pip's index $index is not reachable"
ls "${PIP_FIND_LINKS:-/nonexistent}"/torch-*cpu*.whl >/dev/null 2>&1 || reachable https://download.pytorch.org/whl/cpu/torch/   || skip "no torch wheel in \$PIP_FIND_LINKS and PyTorch's CPU index is not reachable"
echo "Docker step: dockerd and $base ready after $((SECONDS - start)) s"
BASE_IMAGE=$base scripts/compose-smoke.sh
echo "Docker step passed in $((SECONDS - start)) s"
