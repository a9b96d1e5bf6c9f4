#!/usr/bin/env bash
# Build the image, bring up the compose file's secured cpu profile (SuperLink, ServerApp,
# 2 SuperNodes with their ClientApps, TLS and SuperNode authentication), run SFedCA for 2
# rounds from the flwr CLI inside the compose network, check rounds.csv on the results
# volume, and tear everything down (containers, network, volume, throwaway certificates).
#
#   BASE_IMAGE=spikefed-base:bookworm scripts/compose-smoke.sh
#
# Needs docker, docker-compose and a running dockerd. A torch-*.whl in $PIP_FIND_LINKS is
# copied into docker/wheels/ so that the cpu image needs no torch download.
set -euo pipefail
cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME=spikefed-smoke SPIKEFED_TAG=smoke
export BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
compose() { docker-compose --profile cpu "$@"; }
start=$SECONDS
stamp() { printf '[%4ds] %s\n' $((SECONDS - start)) "$*"; }

CERTS_DIR=$(mktemp -d /tmp/spikefed-certs.XXXXXX)
export CERTS_DIR
cleanup() {
  compose --profile cli down --volumes --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$CERTS_DIR"
}
trap cleanup EXIT
scripts/make-certs.sh "$CERTS_DIR" 2 >/dev/null
# the containers run as uid 49999 (see Dockerfile); these certificates are throwaway
if [ "$(id -u)" = 0 ]; then chown -R 49999:49999 "$CERTS_DIR"; else chmod -R a+rX "$CERTS_DIR"; fi

for wheel in "${PIP_FIND_LINKS:-/nonexistent}"/torch-*cpu*.whl; do
  [ -f "$wheel" ] && [ ! -f "docker/wheels/$(basename "$wheel")" ] && cp "$wheel" docker/wheels/
done
stamp "building spikefed:$SPIKEFED_TAG on $BASE_IMAGE"
compose build superlink >/tmp/spikefed-smoke-build.log 2>&1 || { tail -20 /tmp/spikefed-smoke-build.log; exit 1; }
stamp "built (log: /tmp/spikefed-smoke-build.log)"

compose up -d superlink 2>/dev/null
cli() { compose run --rm -T cli "$@" 2>/dev/null; }
for _ in $(seq 60); do cli supernode list >/dev/null 2>&1 && break; sleep 2; done
for i in 0 1; do cli supernode register /certs/supernode-$i.pub >/dev/null; done
stamp "SuperLink up (TLS), 2 SuperNode public keys registered"

compose up -d 2>/dev/null
stamp "up: $(compose ps --services --filter status=running | sort | tr '\n' ' ')"
cli run /app --stream --run-config \
  'num-server-rounds=2 num-partitions=2 strategy="sfedca" local-epochs=1 fraction-train=0.5 min-train-nodes=1 run-name="smoke" results-dir="/app/results"' \
  | grep -E "ROUND|Strategy execution finished|Results:|ERROR|rejected" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-160 || true
stamp "run finished"

rounds=$(compose run --rm -T --entrypoint cat serverapp /app/results/smoke/rounds.csv 2>/dev/null)
echo "$rounds"
rows=$(($(printf '%s\n' "$rounds" | wc -l) - 1))
[ "$rows" = 2 ] || { echo "FAILED: rounds.csv on the results volume has $rows rounds, expected 2"; compose logs --tail 30; exit 1; }
stamp "OK: rounds.csv on the results volume holds 2 rounds; tearing down"
cleanup
trap - EXIT
stamp "down: containers, network, volume and certificates removed"
