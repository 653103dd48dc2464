#!/usr/bin/env bash
# Makes a throwaway CA and certificates for a TLS cluster with openssl, into DIR:
#   deploy/make-certs.sh DIR NODES [DAYS]
#   ca.pem, ca.key          the cluster CA (kept if it exists, so certificates can be re-issued)
#   node-I.pem, node-I.key  node I: SAN node-I (peers check it), localhost, 127.0.0.1, ::1,
#                           and PREFIX-I too when KV_CERT_HOST_PREFIX=PREFIX (compose: kvd)
#   admin.pem, admin.key    a client certificate named `admin` (the admin role)
#   client.pem, client.key  a client certificate named `client` (an ordinary caller)
# For tests and laptops; a real deployment issues certificates from its own CA the same way.
set -euo pipefail
dir=$1
nodes=$2
days=${3:-30}
mkdir -p "$dir"
cd "$dir"
umask 077
if [[ ! -s ca.pem || ! -s ca.key ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -keyout ca.key -out ca.pem -days 3650 -subj "/CN=kvstore cluster CA" 2>/dev/null
fi
issue() {
  local name=$1 san=$2 ext
  ext=$(mktemp)
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n' \
    "$san" >"$ext"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256 \
    -keyout "$name.key" -out "$name.csr" -subj "/CN=$name" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 \
    -days "$days" -extfile "$ext" -out "$name.pem" 2>/dev/null
  rm -f "$name.csr" "$ext"
}
for i in $(seq 1 "$nodes"); do
  extra=""
  if [[ -n "${KV_CERT_HOST_PREFIX:-}" ]]; then extra=",DNS:${KV_CERT_HOST_PREFIX}$i"; fi
  issue "node-$i" "DNS:node-$i,DNS:localhost,IP:127.0.0.1,IP:::1$extra"
done
issue admin "DNS:admin"
issue client "DNS:client"
chmod 644 ./*.pem
