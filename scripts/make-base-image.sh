#!/usr/bin/env bash
# A local Docker base image (Debian bookworm with python3, pip and venv) built without any
# container registry: debootstrap from this machine's own apt source, then `docker import`.
# The Dockerfile builds on it with BASE_IMAGE=<tag> (scripts/compose-smoke.sh, .ci/run).
#
#   scripts/make-base-image.sh [TAG]      # default TAG: spikefed-base:bookworm
#
# Needs root, a running dockerd, and debootstrap (installed with apt-get when missing).
set -euo pipefail
tag=${1:-spikefed-base:bookworm}
[ "$(id -u)" = 0 ] || { echo "make-base-image: debootstrap needs root"; exit 2; }
docker info >/dev/null 2>&1 || { echo "make-base-image: dockerd is not running"; exit 2; }
export DEBIAN_FRONTEND=noninteractive
command -v debootstrap >/dev/null || { timeout 300 apt-get install -y -qq debootstrap >/dev/null 2>&1 \
  || { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq debootstrap >/dev/null; }; }
# the first non-security apt source of this machine (one-line or deb822 format)
mirror=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null \
         | grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
[ -n "$mirror" ] || { echo "make-base-image: no apt source on this machine"; exit 2; }
root=$(mktemp -d /tmp/spikefed-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >/tmp/spikefed-debootstrap.log 2>&1 \
  || { echo "make-base-image: debootstrap from $mirror failed: $(tail -1 /tmp/spikefed-debootstrap.log)"; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# the host's CA bundle, so that pip in the containers trusts what the host trusts
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
tar -C "$root" -c . | docker import -c 'ENV LANG=C.UTF-8' \
  -c 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' -c 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
  -c 'CMD ["python3"]' - "$tag" >/dev/null
version=$(docker run --rm "$tag" python3 --version)  # fails the script when the image cannot run python3
echo "built $tag ($version)"
