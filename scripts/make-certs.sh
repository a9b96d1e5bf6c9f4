#!/usr/bin/env bash
# TLS certificates and SuperNode keys for a secured SpikeFed deployment (never commit them).
#
#   scripts/make-certs.sh OUT_DIR [NUM_SUPERNODES] [HOST ...]
#
# OUT_DIR/ca.crt, ca.key         the certificate authority (SuperNodes and the flwr CLI trust ca.crt)
# OUT_DIR/server.pem, server.key the certificate of the SuperLink and of the SuperNodes' Runtime APIs, for
#                                127.0.0.1, localhost, superlink, supernode-0 .. supernode-<N-1> and HOST ...
# OUT_DIR/supernode-<i>[.pub]    SuperNode i's EC key pair (register the .pub with `flwr supernode register`)
# OUT_DIR/superexec.secret       the secret SuperExec processes share with their SuperLink or SuperNode
set -euo pipefail
out=${1:?usage: make-certs.sh OUT_DIR [NUM_SUPERNODES] [HOST ...]}
count=${2:-2}
shift $(( $# >= 2 ? 2 : 1 ))
mkdir -p "$out"
sans="IP:127.0.0.1,DNS:localhost,DNS:superlink"
for i in $(seq 0 $((count - 1))); do sans+=",DNS:supernode-$i"; done
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ ]]; then sans+=",IP:$host"; else sans+=",DNS:$host"; fi
done
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=spikefed-ca" \
  -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=superlink" \
  -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$sans" > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days 365 -extfile "$out/server.ext" -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"
for i in $(seq 0 $((count - 1))); do
  rm -f "$out/supernode-$i" "$out/supernode-$i.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "spikefed-supernode-$i" -f "$out/supernode-$i"
done
openssl rand -hex 32 | tr -d '\n' > "$out/superexec.secret"
chmod 600 "$out"/*.key "$out/superexec.secret"
echo "certificates and $count SuperNode key pairs in $out (SANs: $sans)"
