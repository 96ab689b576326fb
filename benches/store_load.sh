#!/usr/bin/env bash
# HTTP benchmark of the embedded store through the gateway: creates/s, read by id,
# `userName eq` query, and a paged scan of every user, at N users (default 100000).
#
#   bash benches/store_load.sh            # N=100000
#   N=1000000 bash benches/store_load.sh  # the 1M figures
#
# Starts a release gateway on a free loopback port with temp conf (shipped managed.json)
# and data dirs. Creates use PUT + If-None-Match: * with known ids (u0..uN-1) and no
# password (argon2 would measure the hash, not the store). Reads and queries pick random
# existing users. The scan reads every user in pages of 1000 with keyset cookies and
# records the gateway's peak RSS. Load comes from wrk (-t2 -c64) on the same 2 cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
N=${N:-100000}
SECS=${SECS:-10}
CONNS=${CONNS:-64}
ADMIN_PW=bench-admin-pw
T0=$SECONDS
log() { printf '[store_load %4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

command -v wrk >/dev/null || bash .ci/apt-ensure wrk
command -v curl >/dev/null || bash .ci/apt-ensure curl
cargo build --release --quiet
BIN=$ROOT/target/release/idm-gateway

WORK=$(mktemp -d "${TMPDIR:-/tmp}/idm-gw-store.XXXXXX")
GW_PID=
cleanup() {
    [[ -n $GW_PID ]] && kill -INT "$GW_PID" 2>/dev/null && wait "$GW_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/conf" "$WORK/data" "$WORK/certs"
cp conf/managed.json "$WORK/conf/"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
unset "${!IDM_GATEWAY_@}" 2>/dev/null || true
RUST_LOG=warn IDM_GATEWAY_ADMIN_PASSWORD=$ADMIN_PW "$BIN" --conf "$WORK/conf" --data "$WORK/data" \
    --certs "$WORK/certs" --listen "127.0.0.1:$PORT" 2>"$WORK/gateway.log" &
GW_PID=$!
for _ in $(seq 100); do
    curl -sf "$URL/openidm/info/ping" >/dev/null && break
    sleep 0.1
done
AUTH=(-H "X-OpenIDM-Username: openidm-admin" -H "X-OpenIDM-Password: $ADMIN_PW")
curl -sf "${AUTH[@]}" "$URL/openidm/info/login" >/dev/null

count() {
    curl -sf "${AUTH[@]}" "$URL/openidm/managed/user?_queryFilter=true&_pageSize=1&_totalPagedResultsPolicy=EXACT&_fields=_id" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["totalPagedResults"])'
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$GW_PID/status"; }
wrk_run() { # label script [env...]
    local label=$1 script=$2 out
    shift 2
    local threads=2
    ((CONNS >= 2)) || threads=1
    out=$(env "$@" WRK_THREADS=$threads wrk --latency -t$threads -c"$CONNS" -d"${SECS}s" "${AUTH[@]}" -s "benches/lua/$script" "$URL" 2>"$WORK/wrk-$label.err")
    if [[ -s $WORK/wrk-$label.err ]]; then
        log "$label: errors:"
        head -5 "$WORK/wrk-$label.err" >&2
    fi
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '| %s | %s | %s | %s |\n' "$label" "$rps" "$p50" "$p99"
}

echo
echo "## store benchmark over HTTP ($(date -u +%FT%TZ), $(nproc) cores, N=$N, wrk -t2 -c$CONNS -d${SECS}s)"
echo
echo "Objects in the store when measured: see the create row label. wrk -c$CONNS saturates the"
echo "gateway, so its p50 is mostly queueing; the 1-connection rows give the latency of one request."
echo
echo "| operation | req/s | p50 | p99 |"
echo "|---|---:|---:|---:|"
# 1. Create rate on an empty store (ids far above the dataset's), then a dense fill of
#    u0..u(N-1) with one wrk thread (one counter: no holes), then the create rate again.
wrk_run "create (empty store)" create.lua ID_OFFSET=1000000000
have=0
log "filling u0..u$((N - 1))"
while ((have < N)); do
    env WRK_THREADS=1 ID_OFFSET="$have" wrk -t1 -c"$CONNS" -d10s "${AUTH[@]}" -s benches/lua/create.lua "$URL" >/dev/null 2>>"$WORK/fill.err" || true
    next=$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$URL/openidm/managed/user/u$have")
    [[ $next == 200 ]] || { log "fill made no progress: $(head -3 "$WORK/fill.err")"; exit 1; }
    # The single thread's ids are dense: find the first missing one.
    lo=$have hi=$((have + 10000000))
    while ((lo + 1 < hi)); do
        mid=$(((lo + hi) / 2))
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" "$URL/openidm/managed/user/u$mid") == 200 ]]; then lo=$mid; else hi=$mid; fi
    done
    have=$hi
    log "  u0..u$((have - 1)) exist"
done
N_ACTUAL=$(count)
wrk_run "create (at $N_ACTUAL users)" create.lua ID_OFFSET=2000000000
wrk_run "read by id" read.lua N="$N"
wrk_run "userName eq query" query.lua N="$N"
CONNS=1 wrk_run "read by id, 1 connection" read.lua N="$N"
CONNS=1 wrk_run "userName eq query, 1 connection" query.lua N="$N"

# 2. Paged scan of everything, pages of 1000, peak RSS sampled every 100 ms.
RSS_BEFORE=$(rss_kb)
peak=$RSS_BEFORE
(
    while kill -0 "$GW_PID" 2>/dev/null; do
        rss_kb >>"$WORK/rss.samples" 2>/dev/null || true
        sleep 0.1
    done
) &
SAMPLER=$!
start=$(date +%s.%N)
python3 - "$URL" "$ADMIN_PW" >"$WORK/scan.out" <<'PY'
import json, sys, urllib.request, urllib.parse
url, pw = sys.argv[1], sys.argv[2]
cookie, total, pages = None, 0, 0
while True:
    q = "_queryFilter=true&_pageSize=1000&_fields=_id,userName"
    if cookie:
        q += "&_pagedResultsCookie=" + urllib.parse.quote(cookie, safe="")
    req = urllib.request.Request(f"{url}/openidm/managed/user?{q}",
        headers={"X-OpenIDM-Username": "openidm-admin", "X-OpenIDM-Password": pw})
    page = json.load(urllib.request.urlopen(req))
    total += page["resultCount"]; pages += 1
    cookie = page["pagedResultsCookie"]
    if not cookie:
        break
print(total, pages)
PY
end=$(date +%s.%N)
kill "$SAMPLER" 2>/dev/null || true
read -r scanned pages <"$WORK/scan.out"
peak=$(sort -n "$WORK/rss.samples" | tail -1)
echo
echo "Paged scan: $scanned users in $pages pages of 1000 in $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.1f", b - a}') s;"
echo "gateway RSS before the scan ${RSS_BEFORE} kB, peak during the scan ${peak} kB."
echo "Store size: $(du -sh "$WORK/data" | cut -f1). Gateway RSS at the end: $(rss_kb) kB"
echo "($(grep -E '^(RssAnon|RssFile|RssShmem)' "/proc/$GW_PID/status" | tr -s ' \t' ' ' | paste -sd, -))."
log done
