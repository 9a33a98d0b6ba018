#!/usr/bin/env bash
# `make run`: start the PKI with `lamassu up`, enroll a device over EST with curl and
# openssl, re-enroll it, show its status; then keep the PKI running until Ctrl-C, which
# stops it and exits 0. Run it again and it reuses its CA and DMS (or replaces the DMS
# when its files and the PKI no longer agree); each run enrolls a new device.
# State lives in the database named by POSTGRES_DATABASE (default lamassu) and in .run/
# (LAMASSU_RUN_DIR); AMQP_PREFIX, EST_PORT and ADMIN_PORT (see README) are honoured, so a
# second demo can run beside the first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUN="${LAMASSU_RUN_DIR:-$PWD/.run}"
export POSTGRES_DATABASE="${POSTGRES_DATABASE:-lamassu}"
export GOPEM_DATA="${GOPEM_DATA:-$RUN/keys}"
export EST_TLS_DIR="${EST_TLS_DIR:-$RUN/est-tls}"
export EST_PORT="${EST_PORT:-8443}"
export VA_PORT="${VA_PORT:-8080}"
export VA_KEYS="${VA_KEYS:-$RUN/va-keys}"
export VA_URL="${VA_URL:-http://localhost:$VA_PORT}"
export LOG_FORMAT="${LOG_FORMAT:-json}"
DEMO="$RUN/demo"
mkdir -p "$DEMO"
lamassu() { .venv/bin/lamassu "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
est() { # est OPERATION CERT KEY CSR-BODY-FILE OUT: one EST POST with curl over mTLS
    if ! curl --silent --show-error --fail-with-body --cacert "$EST_TLS_DIR/server.pem" \
        --cert "$2" --key "$3" -H 'Content-Type: application/pkcs10' \
        --data-binary "@$4" -o "$5.b64" "https://localhost:$EST_PORT/.well-known/est/demo-ca/$1"; then
        echo "demo: EST $1 refused: $(cat "$5.b64" 2>/dev/null)" >&2
        exit 1
    fi
    base64 -d "$5.b64" | openssl pkcs7 -inform DER -print_certs -out "$5"
}

# Every service under its own identity (README "Trust"): broker users and database
# roles made here (idempotent; kept passwords), the CLI below acting as the operator.
export LAMASSU_CREDENTIALS="${LAMASSU_CREDENTIALS:-$RUN/credentials}"
.venv/bin/lamassu bus setup --vhost "${AMQP_VHOST:-lamassu}" --prefix "${AMQP_PREFIX:-}"
.venv/bin/lamassu db setup --role-prefix "${POSTGRES_ROLE_PREFIX:-lamassu_}" \
    --dsn "postgresql://${POSTGRES_USERNAME:-postgres}@${POSTGRES_HOSTNAME:-127.0.0.1}:${POSTGRES_PORT:-5432}/$POSTGRES_DATABASE"
set -a; source "$LAMASSU_CREDENTIALS/admin.env"; set +a

.venv/bin/lamassu up 2>>"$RUN/pki.log" &
UP=$!
RECEIVER=""  # the alerts webhook receiver, once started
stop() {
    [[ -z "$RECEIVER" ]] || kill -TERM "$RECEIVER" 2>/dev/null || true
    kill -TERM "$UP" 2>/dev/null || true
    wait "$UP" 2>/dev/null || true
}
trap stop EXIT
# Ctrl-C is how the demo ends: stop the PKI and exit 0.
trap 'trap - EXIT; stop; echo; echo "demo: stopped"; exit 0' INT TERM
lamassu wait --timeout 120s
for _ in $(seq 100); do [[ -s "$EST_TLS_DIR/server.pem" ]] && break; sleep 0.2; done

step "A CA for devices (LAMASSU-DMS-MANAGER, the internal CA, exists from the first start)"
lamassu ca show demo-ca >/dev/null 2>&1 || lamassu ca create --name demo-ca --validity 10y >/dev/null
lamassu ca list

step "A DMS allowed to enroll for demo-ca; its key is made here, mode 0600"
# Reused when the PKI has it ACTIVE with the certificate in $DEMO; otherwise (a new
# database, deleted files, a revoked DMS) a new one replaces it.
DMS="$(cat "$DEMO/dms-name" 2>/dev/null || echo demo-dms)"
dms_serial() { lamassu --json dms show "$1" 2>/dev/null | .venv/bin/python -c \
    'import json, sys; d = json.load(sys.stdin); print(d["certificate_serial"] if d["status"] == "ACTIVE" else "")'; }
file_serial() { openssl x509 -in "$DEMO/$1.pem" -noout -serial 2>/dev/null | cut -d= -f2 | tr A-F a-f; }
if [[ -s "$DEMO/$DMS.key" && -n "$(file_serial "$DMS")" && "$(dms_serial "$DMS" || true)" == "$(file_serial "$DMS")" ]]; then
    echo "reusing DMS $DMS ($DEMO/$DMS.pem)"
else
    lamassu dms show "$DMS" >/dev/null 2>&1 && DMS="demo-dms-$(date +%s)"
    rm -f "$DEMO/$DMS.key"
    lamassu dms create --name "$DMS" --authorized-ca demo-ca --out "$DEMO"
    echo "$DMS" > "$DEMO/dms-name"
fi
lamassu dms list

DEVICE="sensor-$(date +%s)"
ALERT_PORT="${ALERT_PORT:-8099}"
step "Alerts: a local webhook receiver, subscribed to the certificates of $DEVICE (signed per Standard Webhooks)"
if [[ ! -s "$DEMO/alerts.secret" ]]; then
    (umask 077; echo "whsec_$(openssl rand -base64 32)" > "$DEMO/alerts.secret")
fi
.venv/bin/python scripts/webhook_receiver.py --port "$ALERT_PORT" \
    --secret-file "$DEMO/alerts.secret" > "$DEMO/alerts.log" 2>&1 &
RECEIVER=$!
for id in $(lamassu alert list --json | .venv/bin/python -c 'import json, sys
print(*[s["id"] for s in json.load(sys.stdin)["items"] if s["target"] == sys.argv[1]])' \
    "http://127.0.0.1:$ALERT_PORT/"); do
    lamassu alert delete "$id" >/dev/null  # an earlier run's subscription
done
lamassu alert subscribe --event certificate.create --where "data.device_id == \"$DEVICE\"" \
    --webhook "http://127.0.0.1:$ALERT_PORT/" --secret-file "$DEMO/alerts.secret"
step "Device $DEVICE: key and CSR with openssl, simpleenroll with curl (client certificate: the DMS's)"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$DEMO/device.key" \
    -subj "/CN=$DEVICE" -outform DER 2>/dev/null | base64 > "$DEMO/device.csr.b64"
chmod 600 "$DEMO/device.key"
for _ in $(seq 100); do  # the gateway learns new CAs from ca.create events
    curl -s -o /dev/null -w '%{http_code}' --cacert "$EST_TLS_DIR/server.pem" \
        "https://localhost:$EST_PORT/.well-known/est/demo-ca/cacerts" | grep -q 200 && break
    sleep 0.2
done
est simpleenroll "$DEMO/$DMS.pem" "$DEMO/$DMS.key" "$DEMO/device.csr.b64" "$DEMO/device.pem"
openssl x509 -in "$DEMO/device.pem" -noout -subject -serial -enddate

step "The chain from /cacerts verifies it"
curl -s --cacert "$EST_TLS_DIR/server.pem" "https://localhost:$EST_PORT/.well-known/est/demo-ca/cacerts" \
    | base64 -d | openssl pkcs7 -inform DER -print_certs -out "$DEMO/chain.pem"
openssl verify -CAfile "$DEMO/chain.pem" "$DEMO/device.pem"

step "simplereenroll: the device renews with its own certificate (same key, same subject)"
openssl req -new -key "$DEMO/device.key" -subj "/CN=$DEVICE" -outform DER | base64 > "$DEMO/renew.csr.b64"
est simplereenroll "$DEMO/device.pem" "$DEMO/device.key" "$DEMO/renew.csr.b64" "$DEMO/device-renewed.pem"
openssl x509 -in "$DEMO/device-renewed.pem" -noout -subject -serial -enddate

step "The device, as the device worker derived it from certificate events"
for _ in $(seq 50); do lamassu device show "$DEVICE" 2>/dev/null | grep -q FULLY_PROVISIONED && break; sleep 0.2; done
lamassu device show "$DEVICE"

step "The alerts the receiver got: one per certificate of $DEVICE (lamassu alert deliveries ID shows the attempts)"
for _ in $(seq 50); do [[ $(grep -c 'alert received' "$DEMO/alerts.log") -ge 2 ]] && break; sleep 0.2; done
grep 'alert received' "$DEMO/alerts.log" || echo "no alert arrived yet: see $DEMO/alerts.log"

step "Revocation reaches relying parties: the renewed certificate points at the VA ($VA_URL)"
lamassu ca show demo-ca --pem > "$DEMO/demo-ca.pem"
openssl x509 -in "$DEMO/device-renewed.pem" -noout -ext authorityInfoAccess,crlDistributionPoints
ocsp() { openssl ocsp -issuer "$DEMO/demo-ca.pem" -cert "$DEMO/device-renewed.pem" \
    -url "$VA_URL/ocsp" -CAfile "$DEMO/demo-ca.pem" 2>&1; }
for _ in $(seq 100); do ocsp | grep -q ": good" && break; sleep 0.2; done  # responder ready
lamassu ocsp status --cert "$DEMO/device-renewed.pem"
SERIAL=$(openssl x509 -in "$DEMO/device-renewed.pem" -noout -serial | cut -d= -f2)
lamassu cert revoke "$SERIAL" --reason key-compromise --yes >/dev/null
for _ in $(seq 50); do ocsp | grep -q ": revoked" && break; sleep 0.2; done
echo "openssl ocsp says:"; ocsp | grep -E "revoked|Reason|verify"
lamassu crl publish demo-ca >/dev/null
for _ in $(seq 50); do
    curl -s -o "$DEMO/demo-ca.crl" "$VA_URL/crl/demo-ca.crl" &&
        openssl crl -inform DER -in "$DEMO/demo-ca.crl" -noout -text | grep -qi "${SERIAL}" && break
    sleep 0.2
done
openssl crl -inform DER -in "$DEMO/demo-ca.crl" -out "$DEMO/demo-ca.crl.pem"
if openssl verify -crl_check -CAfile "$DEMO/demo-ca.pem" -CRLfile "$DEMO/demo-ca.crl.pem" \
    "$DEMO/device-renewed.pem"; then
    echo "unexpected: the revoked certificate verified" >&2; exit 1
else
    echo "openssl verify -crl_check refuses the revoked certificate, as it should"
fi

step "An expiry sweep, fanned out into shards (nothing is due yet, so nothing changes)"
lamassu sweep run --wait

step "The PKI is running: EST on https://localhost:$EST_PORT (server certificate $EST_TLS_DIR/server.pem), OCSP and CRLs on $VA_URL, logs in $RUN/pki.log. Try .venv/bin/lamassu status, or --help. Ctrl-C stops it."
wait "$UP"
