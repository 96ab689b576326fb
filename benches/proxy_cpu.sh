#!/usr/bin/env bash
# CPU per proxied request, repeated and interleaved: the gateway in several set-ups against
# the bare pingora forwarder (benches/pingora_baseline.rs) and nginx, on one upstream.
#
#   bash benches/proxy_cpu.sh            # ROUNDS=5 SECS=8
#
# benches/load.sh measures each target once, and on a shared 2-core VM one run's CPU per
# request varies by ±30 %: a ratio of two single runs says little. This script runs every
# set-up ROUNDS times, round-robin (so a noisy minute hits all of them), and reports the
# median and the minimum CPU µs per request of each, its ratio to the bare forwarder's
# median, the user/system split, and where the gateway's CPU went by thread name.
#
# Set-ups (SETUPS, space-separated, default all):
#   nginx        nginx reverse proxy (1 worker per proxy thread), the reference
#   pingora      bare pingora forwarder
#   pingora-nows bare pingora forwarder, work stealing off
#   gw-bare      gateway, RUST_LOG=warn, no audit.json
#   gw-log       gateway, access log (RUST_LOG=info), no audit
#   gw-full      gateway, access log + the shipped conf/audit.json (IDM's default: JSON files)
#   gw-full-nows gw-full with gateway.json server.workStealing=false
#   gw-full-lt2  gw-full with server.listenerTasksPerFd=2
# All gateways run the shipped authentication.json and access.json, 2 proxy threads
# (THREADS), one Basic-auth caller (cached after the first request), wrk -t2 -c64.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-8}
THREADS=${THREADS:-2}
SETUPS=${SETUPS:-nginx pingora pingora-nows gw-bare gw-log gw-full gw-full-nows gw-full-lt2}
PW=bench-admin-pw

. benches/lib.sh
log() { printf '[proxy_cpu.sh] %s\n' "$*" >&2; }
command -v wrk >/dev/null && command -v nginx >/dev/null ||
    { log "needs wrk and nginx (apt-get install wrk nginx-light)"; exit 1; }

log "building (release)"
cargo build --release --quiet
GATEWAY_BIN=$ROOT/target/release/idm-gateway
PINGORA_BIN=$(cargo bench --quiet --bench pingora_baseline --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/pingora_baseline-[^"/]*"' | tail -1 | cut -d'"' -f4)
[[ -x $PINGORA_BIN ]] || { log "could not build benches/pingora_baseline.rs"; exit 1; }

WORK=$(mktemp -d /tmp/idm-gw-cpu.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

wait_up() { # url
    wait_for 10 curl -sf -o /dev/null -u "openidm-admin:$PW" "$1" || { log "$1 did not answer"; exit 1; }
}
thread_ticks() { # pid -> "name ticks" per thread
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s %s\n' "$(basename "$t")" "$(tr ' ' _ <"$t/comm")" \
            "$(sed 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')"
    done | sort
}

# ---------------------------------------------------------------- upstream
UP=$(free_port)
mkdir -p "$WORK/up/logs"
cat >"$WORK/up/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/up/nginx.pid;
error_log $WORK/up/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$UP;
        keepalive_requests 1000000;
        location / {
            default_type application/json;
            return 200 '{"result":[{"_id":"8c5e5f5a","userName":"bjensen","mail":"bjensen@example.com"}],"resultCount":1}';
        }
    }
}
EOF
nginx -p "$WORK/up" -c "$WORK/up/nginx.conf" -g 'daemon off;' 2>"$WORK/up/logs/stderr" &
PIDS+=($!)

start() { # setup port -> sets PID
    local setup=$1 port=$2 dir=$WORK/$1
    rm -rf "$dir"
    mkdir -p "$dir/conf" "$dir/data" "$dir/certs" "$dir/logs"
    case $setup in
    nginx)
        cat >"$dir/nginx.conf" <<EOF
worker_processes $THREADS;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    upstream up { server 127.0.0.1:$UP; keepalive 512; }
    server {
        listen 127.0.0.1:$port;
        keepalive_requests 1000000;
        location /openidm/external/idm/bench/ {
            proxy_pass http://up/openidm/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Basic dXA6cHc=";
            proxy_set_header X-Requested-With RemoteIDMProxy;
        }
    }
}
EOF
        nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/logs/stderr" &
        ;;
    pingora | pingora-nows)
        local ws=true
        [[ $setup == pingora-nows ]] && ws=false
        "$PINGORA_BIN" --listen "127.0.0.1:$port" --upstream "127.0.0.1:$UP" \
            --threads "$THREADS" --work-stealing $ws 2>"$dir/logs/stderr" &
        ;;
    gw-*)
        cat >"$dir/conf/external.idm-bench.json" <<EOF
{"authType": "basic", "instanceUrl": "http://127.0.0.1:$UP/openidm/", "userName": "up", "password": "pw"}
EOF
        cp conf/authentication.json conf/access.json "$dir/conf/"
        local ws=true lt=1 level=info
        case $setup in
        gw-bare) level=warn ;;
        gw-full*) cp conf/audit.json "$dir/conf/" ;;
        esac
        [[ $setup == gw-full-nows ]] && ws=false
        [[ $setup == gw-full-lt2 ]] && lt=2
        printf '{"server": {"workStealing": %s, "listenerTasksPerFd": %s}}\n' $ws $lt \
            >"$dir/conf/gateway.json"
        RUST_LOG=$level IDM_GATEWAY_ADMIN_PASSWORD=$PW "$GATEWAY_BIN" --conf "$dir/conf" \
            --data "$dir/data" --certs "$dir/certs" --listen "127.0.0.1:$port" \
            --threads "$THREADS" 2>"$dir/logs/gateway.log" &
        ;;
    esac
    PID=$!
    PIDS+=("$PID")
    wait_up "http://127.0.0.1:$port/openidm/external/idm/bench/managed/user"
}

declare -A RESULTS USERSYS THREADCPU
AUTH="Authorization: Basic $(printf 'openidm-admin:%s' "$PW" | base64)"
for round in $(seq "$ROUNDS"); do
    for setup in $SETUPS; do
        port=$(free_port)
        start "$setup" "$port"
        before=$(cpu_ticks_split "$PID")
        thread_ticks "$PID" >"$WORK/threads.before"
        out=$(wrk -t2 -c64 -d"${SECS}s" -H "$AUTH" \
            "http://127.0.0.1:$port/openidm/external/idm/bench/managed/user?_queryFilter=true")
        after=$(cpu_ticks_split "$PID")
        thread_ticks "$PID" >"$WORK/threads.after"
        requests=$(grep -o '[0-9]* requests in' <<<"$out" | cut -d' ' -f1)
        read -r u0 s0 <<<"$before"
        read -r u1 s1 <<<"$after"
        hz=$(getconf CLK_TCK)
        us=$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$requests" -v hz="$hz" \
            'BEGIN {printf "%.1f", (u + s) * 1e6 / hz / n}')
        RESULTS[$setup]="${RESULTS[$setup]:-} $us"
        USERSYS[$setup]="${USERSYS[$setup]:-} $((u1 - u0))/$((s1 - s0))"
        if [[ $setup == gw-full ]]; then
            THREADCPU[$setup]=$(join "$WORK/threads.before" "$WORK/threads.after" |
                awk '{d[$2] += $5 - $3; t += $5 - $3} END {for (k in d) if (d[k] > 0) printf "%s %.0f%%, ", k, 100 * d[k] / t}')
        fi
        log "round $round $setup: $requests requests, $us µs CPU/request"
        # SIGINT: a fast stop (SIGTERM would wait out pingora's grace period).
        kill -INT "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        # Access logs and audit files of a run are ~250 MB: keep the disk for the next.
        rm -rf "${WORK:?}/$setup"
    done
done

BASE=$(median <<<"${RESULTS[pingora]:-0}")
echo
echo "## CPU per proxied request ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, $ROUNDS rounds of ${SECS}s, round-robin)"
echo
echo "| set-up | median µs/request | min | × bare pingora (median) | user/sys ticks per round | runs |"
echo "|---|---:|---:|---:|---|---|"
for setup in $SETUPS; do
    med=$(median <<<"${RESULTS[$setup]}")
    ratio=$(awk -v m="$med" -v b="$BASE" 'BEGIN {if (b > 0) printf "%.2f", m / b; else print "-"}')
    echo "| $setup | $med | $(minimum <<<"${RESULTS[$setup]}") | $ratio |${USERSYS[$setup]} |${RESULTS[$setup]} |"
done
if [[ -n ${THREADCPU[gw-full]:-} ]]; then
    echo
    echo "gw-full CPU by thread (last round): ${THREADCPU[gw-full]%, }"
fi
