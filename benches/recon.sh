#!/usr/bin/env bash
# Reconciliation throughput:
#   local:  N users managed/user → managed/other on one gateway (B);
#   scripted: the same N users → managed/other2 by a mapping with IDM's usual JavaScript: two
#           script transforms and a script correlation query (issue 12's target: ≥ 10 000
#           objects/s);
#   remote: a second gateway A reconciles external/idm/b/managed/user (B's N users, through
#           A's remote CREST client and B's HTTP API) → managed/user on A.
#   clustered (STORE=postgres only): the local case's mapping with IDM's
#           clusteredSourceReconEnabled, → managed/other3, run from B while a second gateway C
#           on the same PostgreSQL store works on its source pages too (compare with local).
#
#   bash benches/recon.sh            # N=100000
#   N=20000 bash benches/recon.sh
#
# Starts the release gateway on a free loopback port in a temp dir (stopped on exit), seeds
# N users over HTTP (python3, keep-alive connections), then times with
# `POST /openidm/recon?_action=recon&mapping=u2o&waitForCompletion=true`:
#   1. the first run (every source ABSENT → CREATE + link),
#   2. an unchanged re-run (every source CONFIRMED, nothing written),
# and reports objects/s, the run's situation summary, and the gateway's RSS (VmRSS now and
# VmHWM, the peak) of the gateways after each run (B also serves the remote case's source).
# Knobs: N, THREADS (gateway workers, default nproc), SEED_CONNS (16), KEEP_TMP (0),
# CASES ("local scripted remote"), STORE (sqlite, or postgres: B on a throwaway durable
# PostgreSQL server started here, see benches/lib.sh start_pg), TASK_THREADS (the local
# mapping's taskThreads, IDM's default 10), CLUSTER_NODES (2, or 1: the clustered case without
# gateway C).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-100000}
THREADS=${THREADS:-$(nproc)}
SEED_CONNS=${SEED_CONNS:-16}
KEEP_TMP=${KEEP_TMP:-0}
CASES=${CASES:-local scripted remote}
STORE=${STORE:-sqlite}
. benches/lib.sh
ADMIN_PW=bench-admin-pw
TARGET_DIR=${CARGO_TARGET_DIR:-target}

cargo build --release --quiet
BIN=$TARGET_DIR/release/idm-gateway

TMP=$(mktemp -d /tmp/recon-bench.XXXXXX)
GW_PID=
A_PID=
C_PID=
cleanup() {
    for p in $GW_PID $A_PID $C_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    stop_pg
    if [ "$KEEP_TMP" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
mkdir -p "$TMP/conf" "$TMP/data" "$TMP/certs"

python3 - "$TMP/conf" <<'EOF'
import json, os, sys
conf = sys.argv[1]
managed = json.load(open("conf/managed.json"))
managed["objects"].append({"name": "other", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True},
    "mail": {"type": "string", "searchable": True},
    "givenName": {"type": "string"}, "sn": {"type": "string"}}}})
managed["objects"].append({"name": "other3", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True},
    "mail": {"type": "string", "searchable": True},
    "givenName": {"type": "string"}, "sn": {"type": "string"}}}})
managed["objects"].append({"name": "other2", "schema": {"properties": {
    "userName": {"type": "string", "searchable": True},
    "mail": {"type": "string", "searchable": True},
    "cn": {"type": "string"}, "sn": {"type": "string"}}}})
json.dump(managed, open(f"{conf}/managed.json", "w"))
js = lambda src: {"type": "text/javascript", "source": src}
json.dump({"mappings": [{
    "name": "u2o", "source": "managed/user", "target": "managed/other",
    "properties": [{"source": p, "target": p} for p in ("userName", "mail", "givenName", "sn")],
    "correlationQuery": {"_queryFilter": "mail eq \"${source.mail}\""},
    "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
    # Seeding must not push every user by implicit sync: the runs below measure recon.
    "enableSync": False, "taskThreads": int(os.environ.get("TASK_THREADS", "10"))}, {
    "name": "u2o_c", "source": "managed/user", "target": "managed/other3",
    "properties": [{"source": p, "target": p} for p in ("userName", "mail", "givenName", "sn")],
    "correlationQuery": {"_queryFilter": "mail eq \"${source.mail}\""},
    "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
    "clusteredSourceReconEnabled": True,
    "enableSync": False, "taskThreads": int(os.environ.get("TASK_THREADS", "10"))}, {
    "name": "u2o_js", "source": "managed/user", "target": "managed/other2",
    "properties": [
        {"source": "userName", "target": "userName", "transform": js("source.toLowerCase()")},
        {"source": "mail", "target": "mail"},
        {"target": "cn", "transform": js("source.givenName + ' ' + source.sn")},
        {"source": "sn", "target": "sn"}],
    "correlationQuery": js("({_queryFilter: 'mail eq \"' + source.mail + '\"'})"),
    "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}],
    "enableSync": False}]},
    open(f"{conf}/sync.json", "w"))
EOF

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STORE_ARGS=()
if [ "$STORE" = postgres ]; then
    chmod 755 "$TMP"
    start_pg "$TMP/pg"
    STORE_ARGS=(--store "$PG_URL" --node-id bench-b)
    echo "store: PostgreSQL ($PG_BIN)"
fi
IDM_GATEWAY_ADMIN_PASSWORD=$ADMIN_PW RUST_LOG=warn "$BIN" --conf "$TMP/conf" --data "$TMP/data" \
    --certs "$TMP/certs" --listen "127.0.0.1:$PORT" --threads "$THREADS" "${STORE_ARGS[@]}" \
    >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/openidm/info/ping" >/dev/null && break
    sleep 0.1
done

AUTH=(-H "X-OpenIDM-Username: openidm-admin" -H "X-OpenIDM-Password: $ADMIN_PW")

echo "seeding $N users ($SEED_CONNS connections)…"
SEED_START=$(date +%s.%N)
python3 - "$PORT" "$ADMIN_PW" "$N" "$SEED_CONNS" <<'EOF'
import http.client, json, sys, threading
port, pw, n, conns = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
headers = {"X-OpenIDM-Username": "openidm-admin", "X-OpenIDM-Password": pw,
           "Content-Type": "application/json"}
def work(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(k, n, conns):
        body = json.dumps({"userName": f"user{i}", "givenName": "Given", "sn": f"Sn{i}",
                           "mail": f"user{i}@example.com"})
        c.request("PUT", f"/openidm/managed/user/u{i}", body, headers)
        r = c.getresponse(); r.read()
        if r.status >= 300:
            raise SystemExit(f"seed failed: {r.status}")
threads = [threading.Thread(target=work, args=(k,)) for k in range(conns)]
[t.start() for t in threads]; [t.join() for t in threads]
EOF
SEED_END=$(date +%s.%N)
printf 'seeded in %.1f s\n' "$(echo "$SEED_END - $SEED_START" | bc)"

rss1() { awk '/^VmRSS|^VmHWM/ {printf "%s %d MB  ", $1, $2/1024}' "/proc/$1/status"; }
rss() {
    echo -n "B: $(rss1 "$GW_PID")"
    if [ -n "$A_PID" ]; then echo -n "  A: $(rss1 "$A_PID")"; fi
    if [ -n "$C_PID" ]; then echo -n "  C: $(rss1 "$C_PID")"; fi
    echo
}
echo "after seeding: $(rss)"

# run LABEL PORT MAPPING
run() {
    local label=$1 port=$2 mapping=$3 start end secs id
    start=$(date +%s.%N)
    id=$(curl -sf "${AUTH[@]}" -X POST \
        "http://127.0.0.1:$port/openidm/recon?_action=recon&mapping=$mapping&waitForCompletion=true" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])')
    end=$(date +%s.%N)
    secs=$(echo "$end - $start" | bc)
    curl -sf "${AUTH[@]}" "http://127.0.0.1:$port/openidm/recon/$id" >"$TMP/$label.json"
    python3 - "$TMP/$label.json" "$label" "$secs" "$N" <<'EOF'
import json, sys
run, label, secs, n = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
sits = {k: v for k, v in run["situationSummary"].items() if v}
print(f"{label:10s} {run['state']:8s} {secs:7.2f} s  {n / secs:9.0f} objects/s  "
      f"situations={sits} status={run['statusSummary']} target={run['progress']['target']}")
if "sourceProcessedByNode" in run:
    print(f"           sourceProcessedByNode={run['sourceProcessedByNode']}")
EOF
    echo "           $(rss)"
}
case " $CASES " in *" local "*)
    run first "$PORT" u2o
    run unchanged "$PORT" u2o
esac

case " $CASES " in *" clustered "*)
    [ "$STORE" = postgres ] || { echo "the clustered case needs STORE=postgres" >&2; exit 1; }
    # CLUSTER_NODES=1: B alone works on its pages (the clustered path without a second node).
    if [ "${CLUSTER_NODES:-2}" = 2 ]; then
        C_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$TMP/c/data"
    IDM_GATEWAY_ADMIN_PASSWORD=$ADMIN_PW RUST_LOG=warn "$BIN" --conf "$TMP/conf" --data "$TMP/c/data" \
        --certs "$TMP/certs" --listen "127.0.0.1:$C_PORT" --threads "$THREADS" \
        --store "$PG_URL" --node-id bench-c >"$TMP/gateway-c.log" 2>&1 &
    C_PID=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$C_PORT/openidm/info/ping" >/dev/null && break
        sleep 0.1
    done
    fi
    run clu-first "$PORT" u2o_c
    run clu-unch "$PORT" u2o_c
esac

case " $CASES " in *" scripted "*)
    run js-first "$PORT" u2o_js
    run js-unchanged "$PORT" u2o_js
esac

case " $CASES " in *" remote "*)
    mkdir -p "$TMP/a/conf" "$TMP/a/data" "$TMP/a/certs"
    cp conf/managed.json "$TMP/a/conf/managed.json"
    python3 - "$TMP/a/conf" "$PORT" "$ADMIN_PW" <<'EOF'
import json, sys
conf, port, pw = sys.argv[1], sys.argv[2], sys.argv[3]
json.dump({"authType": "basic", "instanceUrl": f"http://127.0.0.1:{port}/openidm/",
           "userName": "openidm-admin", "password": pw}, open(f"{conf}/external.idm-b.json", "w"))
json.dump({"mappings": [{
    "name": "bUser_aUser", "source": "external/idm/b/managed/user", "target": "managed/user",
    "properties": [{"source": p, "target": p} for p in ("userName", "mail", "givenName", "sn")],
    "correlationQuery": {"_queryFilter": "userName eq \"${source.userName}\""},
    "policies": [{"situation": "SOURCE_MISSING", "action": "DELETE"}]}]},
    open(f"{conf}/sync.json", "w"))
EOF
    A_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    IDM_GATEWAY_ADMIN_PASSWORD=$ADMIN_PW RUST_LOG=warn "$BIN" --conf "$TMP/a/conf" --data "$TMP/a/data" \
        --certs "$TMP/a/certs" --listen "127.0.0.1:$A_PORT" --threads "$THREADS" >"$TMP/gateway-a.log" 2>&1 &
    A_PID=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$A_PORT/openidm/info/ping" >/dev/null && break
        sleep 0.1
    done
    run remote-first "$A_PORT" bUser_aUser
    run remote-unch "$A_PORT" bUser_aUser
esac
