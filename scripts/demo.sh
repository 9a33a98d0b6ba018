#!/usr/bin/env bash
# `make run`: start the PKI with `lamassu up`, show it working, keep it running.
# State lives in the database named by POSTGRES_DATABASE (default lamassu) and in .run/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export POSTGRES_DATABASE="${POSTGRES_DATABASE:-lamassu}"
export GOPEM_DATA="${GOPEM_DATA:-$PWD/.run/keys}"
export LOG_FORMAT="${LOG_FORMAT:-json}"
RUN="$PWD/.run"
mkdir -p "$RUN/demo"
lamassu() { .venv/bin/lamassu "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

.venv/bin/lamassu up 2>>"$RUN/pki.log" &
UP=$!
trap 'kill -TERM $UP 2>/dev/null; wait $UP 2>/dev/null || true' EXIT INT TERM
lamassu wait --timeout 90

step "CAs (LAMASSU-DMS-MANAGER is created on first start)"
lamassu ca show demo-root >/dev/null 2>&1 || lamassu ca create --name demo-root --key-type ec-p256 --validity 10y >/dev/null
lamassu ca list

step "A device key and CSR made with openssl"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$RUN/demo/device.key" -subj "/CN=demo-device-$(date +%s)" -out "$RUN/demo/device.csr" 2>/dev/null
chmod 600 "$RUN/demo/device.key"
echo "$RUN/demo/device.csr"

step "lamassu cert sign --ca demo-root --csr device.csr"
lamassu events tail --type 'certificate.#' --count 1 > "$RUN/demo/event.txt" &
TAIL=$!
lamassu cert sign --ca demo-root --csr "$RUN/demo/device.csr" | tee "$RUN/demo/device.crt"

step "openssl verify against the CA certificate"
lamassu ca show demo-root --pem > "$RUN/demo/ca.pem"
openssl verify -CAfile "$RUN/demo/ca.pem" "$RUN/demo/device.crt"

step "The certificate.create event, as any subscriber sees it"
wait $TAIL
cat "$RUN/demo/event.txt"

step "The PKI is running (logs: .run/pki.log). Try: .venv/bin/lamassu --help. Ctrl-C stops it."
wait $UP
