#!/usr/bin/env bash
# Load benchmark of the proxied path: direct upstream vs nginx as a reference reverse proxy
# vs idm-gateway, all on loopback.
#
#   bash benches/load.sh
#
# Starts (on free loopback ports, in a temp dir, all stopped on exit):
#   * upstream: nginx answering a fixed ~250-byte IDM query result under /openidm/
#   * nginx-proxy: nginx doing the gateway's work for one remote instance (caller check,
#     fixed Authorization, X-Requested-With rewrite, caller X-OpenIDM-*/Cookie dropped,
#     transaction id, Set-Cookie dropped, upstream keep-alive)
#   * idm-gateway (release build) with one basic instance pointing at the upstream
# For each target: peak req/s and latency with wrk (closed loop, -t2 -c64), then latency at
# half of that target's peak with benches/loadgen.rs (open loop, fixed rate; wrk2 is not in
# Debian), and the direct upstream at the same rate for the "added p99".
#
# Knobs (environment): THREADS (proxy workers, default nproc), PEAK_SECS (10),
# RATE_SECS (6), LOADGEN_THREADS (2), LOG_COMPARE (1: also run the gateway with
# RUST_LOG=warn), BASELINE (1: also measure a bare pingora forwarder, the framework's floor,
# benches/pingora_baseline.rs), AUDIT (1: the first gateway also audits, with the shipped
# conf/audit.json; the RUST_LOG=warn one never does), WORK_STEALING (true), LISTENER_TASKS (1),
# POOL (512): pingora's runtime settings, given to the gateway (gateway.json "server") and to
# the bare forwarder alike, PERF (0; 1: perf-record the gateway during its peak run and print the top
# symbols), KEEP_TMP (0; 1: keep the temp dir with logs, wrk/loadgen output, perf.data).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

THREADS=${THREADS:-$(nproc)}
PEAK_SECS=${PEAK_SECS:-10}
RATE_SECS=${RATE_SECS:-6}
RATE_WARMUP=1
CONNS=64
LOG_COMPARE=${LOG_COMPARE:-1}
AUDIT=${AUDIT:-1}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
PERF=${PERF:-0}
WORK_STEALING=${WORK_STEALING:-true}
LISTENER_TASKS=${LISTENER_TASKS:-1}
POOL=${POOL:-512}
KEEP_TMP=${KEEP_TMP:-0}
ADMIN_PW=bench-admin-pw
UP_USER=remote-admin
UP_PW=remote-pw
# ~250 bytes, like an IDM query result. No '$' or "'" (it goes into nginx.conf).
BODY='{"result":[{"_id":"8c5e5f5a-2a5c-4b6e-9f0d-1a2b3c4d5e6f","_rev":"000000001f2c3d4e","userName":"bjensen","givenName":"Barbara","sn":"Jensen","mail":"bjensen@example.com"}],"resultCount":1,"pagedResultsCookie":null,"totalPagedResults":-1}'

T0=$SECONDS
log() { printf '[load.sh %3ds] %s\n' $((SECONDS - T0)) "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------- prerequisites
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${missing[*]}"
        apt-get install -y "${missing[@]}" >/dev/null ||
            { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
    else
        die "missing ${missing[*]}: apt-get install -y nginx-light wrk curl"
    fi
fi
# Settings of the gateway come from the command line below only.
unset "${!IDM_GATEWAY_@}" 2>/dev/null || true

# ---------------------------------------------------------------- temp dir and cleanup
WORK=$(mktemp -d "${TMPDIR:-/tmp}/idm-gw-load.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $KEEP_TMP == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- build
log "cargo build --release"
cargo build --release --quiet
GATEWAY_BIN=$ROOT/target/release/idm-gateway
log "cargo bench --bench loadgen --no-run"
LOADGEN=$(cargo bench --quiet --bench loadgen --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*/loadgen-[^"/]*"' | tail -1 | cut -d'"' -f4)
[[ -x $LOADGEN ]] || die "could not build benches/loadgen.rs"
BASELINE=${BASELINE:-1}
if [[ $BASELINE == 1 ]]; then
    log "cargo bench --bench pingora_baseline --no-run"
    PINGORA_BIN=$(cargo bench --quiet --bench pingora_baseline --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*/pingora_baseline-[^"/]*"' | tail -1 | cut -d'"' -f4)
    [[ -x $PINGORA_BIN ]] || die "could not build benches/pingora_baseline.rs"
fi

# ---------------------------------------------------------------- helpers
. benches/lib.sh # cpu_ticks
USED_PORTS=" "
pick_port() { # variable name: set to a loopback port nothing listens on (and not handed out yet)
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        # Connection refused: nothing listens there.
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            USED_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

wait_http() { # url [headers...]
    local url=$1
    shift
    for _ in $(seq 100); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null) == 200 ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "$url did not answer 200"
}

start_nginx() { # name port conf-body
    local dir=$WORK/$1
    mkdir -p "$dir/logs"
    printf '%s\n' "$3" >"$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -t -q ||
        die "nginx config of $1 is invalid"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -g 'daemon off;' \
        2>>"$dir/logs/stderr.log" &
    PIDS+=($!)
    eval "${1//-/_}_PID=$!"
}

GW_PID=
start_gateway() { # port rust_log
    RUST_LOG=$2 IDM_GATEWAY_ADMIN_PASSWORD=$ADMIN_PW "$GATEWAY_BIN" \
        --conf "$WORK/gw/conf" --data "$WORK/gw/data" --certs "$WORK/gw/certs" \
        --listen "127.0.0.1:$1" --threads "$THREADS" 2>>"$WORK/gw/gateway-$2.log" &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_http "http://127.0.0.1:$1/openidm/info/ping"
    # One authenticated request: the admin password hash is verified (argon2) and cached.
    wait_http "http://127.0.0.1:$1/openidm/external/idm/bench/managed/user" "${HDR[@]}"
}

stop_pid() { # pid
    kill -INT "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

rss() { awk '/^VmRSS/ {print $2 " " $3}' "/proc/$1/status"; }
threads_of() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }

HZ=$(getconf CLK_TCK)

# wrk's "1.23ms" / "456.00us" / "1.20s" -> milliseconds
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    }'
}

HDR=(-H "X-OpenIDM-Username: openidm-admin" -H "X-OpenIDM-Password: $ADMIN_PW"
    -H "X-Requested-With: XMLHttpRequest")

declare -A PEAK P50 P99 HALF HALF_P99 HALF_CPU DIRECT_P99 CPU_PER_REQ URL PID_OF
ORDER=()

# Peak with wrk (closed loop). Sets PEAK/P50/P99/CPU_PER_REQ for the target.
run_peak() { # key
    local key=$1 out before after
    # Warm-up: connections, the gateway's credential cache and upstream pool.
    wrk -t1 -c8 -d1s "${HDR[@]}" "${URL[$key]}" >/dev/null
    before=$(cpu_ticks "${PID_OF[$key]}")
    if [[ $PERF == 1 && $key == gateway* ]]; then
        perf record -q -F 499 -p "${PID_OF[$key]}" -o "$WORK/perf-$key.data" \
            -- sleep "$PEAK_SECS" 2>/dev/null &
        PERF_PID=$!
    fi
    out=$(wrk --latency -t2 -c$CONNS -d"${PEAK_SECS}s" "${HDR[@]}" "${URL[$key]}")
    after=$(cpu_ticks "${PID_OF[$key]}")
    if [[ -n ${PERF_PID:-} ]]; then
        wait "$PERF_PID" || true
        PERF_PID=
        echo "---- perf: top symbols of $key during the peak run (self time)" >&2
        perf report -i "$WORK/perf-$key.data" --no-children --sort dso,symbol \
            --percent-limit 1 --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40 >&2 || true
    fi
    printf '%s\n' "$out" >"$WORK/wrk-$key.txt"
    echo "---- wrk --latency -t2 -c$CONNS -d${PEAK_SECS}s  [$key] ${URL[$key]}" >&2
    printf '%s\n' "$out" | sed 's/^/    /' >&2
    if grep -q 'Non-2xx' <<<"$out"; then
        die "$key answered non-2xx responses under load"
    fi
    PEAK[$key]=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    P50[$key]=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    P99[$key]=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    local reqs
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    CPU_PER_REQ[$key]=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$reqs" \
        'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
}

# Fixed rate with loadgen (open loop); prints "p99_ms server_cpu_us_per_request".
run_rate() { # key rate
    local out before after
    before=$(cpu_ticks "${PID_OF[$1]}")
    out=$("$LOADGEN" --url "${URL[$1]}" --rate "$2" --duration "$RATE_SECS" \
        --warmup "$RATE_WARMUP" --connections $CONNS --threads "$LOADGEN_THREADS" "${HDR[@]}")
    after=$(cpu_ticks "${PID_OF[$1]}")
    printf '%s\n' "$out" >>"$WORK/loadgen-$1.txt"
    echo "---- loadgen --rate $2 --connections $CONNS --duration $RATE_SECS  [$1]" >&2
    printf '%s\n' "$out" | grep -v '^RESULT' | sed 's/^/    /' >&2
    local result
    result=$(grep '^RESULT' <<<"$out")
    if ! grep -q ' non2xx=0 errors=0 ' <<<"$result"; then
        die "$1 had errors at $2 req/s: $result"
    fi
    # Requests sent during the whole run (warm-up included) = rate * (warm-up + duration).
    awk -v r="$result" -v t=$((after - before)) -v hz="$HZ" -v rate="$2" \
        -v secs="$(awk -v a="$RATE_WARMUP" -v b="$RATE_SECS" 'BEGIN {print a + b}')" 'BEGIN {
            match(r, /p99_ms=[0-9.]+/); p99 = substr(r, RSTART + 7, RLENGTH - 7)
            printf "%s %.1f\n", p99, t / hz * 1e6 / (rate * secs)
        }'
}

# Idle share of all CPUs over one second, to tell a busy machine from a slow target.
cpu_idle_pct() {
    local a b
    a=($(head -1 /proc/stat))
    sleep 1
    b=($(head -1 /proc/stat))
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do
        total=$((total + b[i] - a[i]))
    done
    echo $((100 * (b[4] - a[4]) / (total > 0 ? total : 1)))
}

# ---------------------------------------------------------------- upstream
IDLE_BEFORE=$(cpu_idle_pct)
if ((IDLE_BEFORE < 85)); then
    log "WARNING: the machine is only ${IDLE_BEFORE}% idle before the run: numbers will be low and noisy"
fi
pick_port UP_PORT
pick_port NGX_PORT
pick_port GW_PORT
pick_port GW2_PORT
pick_port PB_PORT

start_nginx upstream "$UP_PORT" "
worker_processes $THREADS;
pid $WORK/upstream/nginx.pid;
error_log $WORK/upstream/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:$UP_PORT reuseport;
        # What the remote received (used once to check both proxies do the same rewrite).
        location = /openidm/echo {
            default_type text/plain;
            return 200 'host=\$http_host auth=\$http_authorization xrw=\$http_x_requested_with user=\$http_x_openidm_username pw=\$http_x_openidm_password cookie=\$http_cookie conn=\$http_connection txid=\$http_x_forgerock_transactionid\n';
        }
        location /openidm/ {
            default_type application/json;
            return 200 '$BODY';
        }
    }
}"
wait_http "http://127.0.0.1:$UP_PORT/openidm/managed/user"

# ---------------------------------------------------------------- nginx reference proxy
UP_AUTH=$(printf '%s:%s' "$UP_USER" "$UP_PW" | base64 -w0)
start_nginx nginx-proxy "$NGX_PORT" "
worker_processes $THREADS;
pid $WORK/nginx-proxy/nginx.pid;
error_log $WORK/nginx-proxy/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    # The gateway authenticates every caller (a cached hash lookup): a map lookup here.
    map \"\$http_x_openidm_username:\$http_x_openidm_password\" \$idm_caller_ok {
        \"openidm-admin:$ADMIN_PW\" 1;
        default 0;
    }
    # X-Requested-With is rewritten only when the caller sent it.
    map \$http_x_requested_with \$idm_xrw {
        \"\" \"\";
        default RemoteIDMProxy;
    }
    upstream idm_bench {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 10000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$NGX_PORT reuseport;
        location /openidm/external/idm/bench/ {
            if (\$idm_caller_ok = 0) {
                return 401;
            }
            proxy_pass http://idm_bench/openidm/;
            proxy_http_version 1.1;
            proxy_set_header Host 127.0.0.1:$UP_PORT;
            proxy_set_header Connection \"\";
            proxy_set_header Authorization \"Basic $UP_AUTH\";
            proxy_set_header X-Requested-With \$idm_xrw;
            proxy_set_header X-OpenIDM-Username \"\";
            proxy_set_header X-OpenIDM-Password \"\";
            proxy_set_header X-OpenIDM-NoSession \"\";
            proxy_set_header Cookie \"\";
            proxy_set_header X-ForgeRock-TransactionId \$request_id;
            proxy_hide_header Set-Cookie;
            add_header X-ForgeRock-TransactionId \$request_id always;
        }
    }
}"

# ---------------------------------------------------------------- idm-gateway
mkdir -p "$WORK/gw/conf" "$WORK/gw/data" "$WORK/gw/certs"
cat >"$WORK/gw/conf/external.idm-bench.json" <<EOF
{
  "authType": "basic",
  "instanceUrl": "http://127.0.0.1:$UP_PORT/openidm/",
  "userName": "$UP_USER",
  "password": "$UP_PW"
}
EOF
# The shipped caller checks and access rules, and pingora's settings of this run.
cp conf/authentication.json conf/access.json "$WORK/gw/conf/"
cat >"$WORK/gw/conf/gateway.json" <<EOF
{
  "server": {
    "workStealing": $WORK_STEALING,
    "listenerTasksPerFd": $LISTENER_TASKS,
    "upstreamKeepalivePoolSize": $POOL
  }
}
EOF
if [[ $AUDIT == 1 ]]; then
    cp conf/audit.json "$WORK/gw/conf/"
fi
start_gateway "$GW_PORT" info
wait_http "http://127.0.0.1:$NGX_PORT/openidm/external/idm/bench/managed/user" "${HDR[@]}"
wait_http "http://127.0.0.1:$GW_PORT/openidm/external/idm/bench/managed/user" "${HDR[@]}"

# Both proxies must hand the upstream the same request.
for target in "nginx-proxy $NGX_PORT" "idm-gateway $GW_PORT"; do
    set -- $target
    echo "upstream saw via $1: $(curl -s "${HDR[@]}" -H 'Cookie: a=b' \
        "http://127.0.0.1:$2/openidm/external/idm/bench/echo")" >&2
done

URL[direct]="http://127.0.0.1:$UP_PORT/openidm/managed/user?_queryFilter=true"
URL[nginx]="http://127.0.0.1:$NGX_PORT/openidm/external/idm/bench/managed/user?_queryFilter=true"
URL[gateway]="http://127.0.0.1:$GW_PORT/openidm/external/idm/bench/managed/user?_queryFilter=true"
URL[gateway_warn]="http://127.0.0.1:$GW2_PORT/openidm/external/idm/bench/managed/user?_queryFilter=true"
URL[pingora]="http://127.0.0.1:$PB_PORT/openidm/managed/user?_queryFilter=true"
PID_OF[direct]=$upstream_PID
PID_OF[nginx]=$nginx_proxy_PID
declare -A LABEL=(
    [direct]="direct upstream (nginx)"
    [nginx]="nginx reverse proxy"
    [gateway]="idm-gateway (RUST_LOG=info, access log to file$([[ $AUDIT == 1 ]] && echo ', audit: shipped audit.json'))"
    [gateway_warn]="idm-gateway (RUST_LOG=warn, no access log, no audit)"
    [pingora]="bare pingora forwarder (benches/pingora_baseline.rs)"
)
declare -A RSS_BEFORE RSS_AFTER THREADS_OF

measure_target() { # key
    local key=$1 half res
    ORDER+=("$key")
    run_peak "$key"
    half=$((PEAK[$key] / 2))
    HALF[$key]=$half
    res=$(run_rate "$key" "$half")
    read -r "HALF_P99[$key]" "HALF_CPU[$key]" <<<"$res"
    if [[ $key != direct ]]; then
        res=$(run_rate direct "$half")
        read -r "DIRECT_P99[$key]" _ <<<"$res"
    fi
}

log "measuring direct upstream"
measure_target direct
log "measuring nginx reverse proxy"
measure_target nginx

if [[ $BASELINE == 1 ]]; then
    log "measuring the bare pingora forwarder"
    "$PINGORA_BIN" --listen "127.0.0.1:$PB_PORT" --upstream "127.0.0.1:$UP_PORT" \
        --threads "$THREADS" --work-stealing "$WORK_STEALING" --listener-tasks "$LISTENER_TASKS" \
        --pool "$POOL" 2>>"$WORK/pingora-baseline.log" &
    PB_PID=$!
    PIDS+=("$PB_PID")
    wait_http "http://127.0.0.1:$PB_PORT/openidm/managed/user"
    PID_OF[pingora]=$PB_PID
    measure_target pingora
    stop_pid "$PB_PID"
fi

log "measuring idm-gateway (RUST_LOG=info)"
PID_OF[gateway]=$GW_PID
RSS_BEFORE[gateway]=$(rss "$GW_PID")
THREADS_OF[gateway]=$(threads_of "$GW_PID")
measure_target gateway
RSS_AFTER[gateway]=$(rss "$GW_PID")
ACCESS_LINES=$(grep -c 'access' "$WORK/gw/gateway-info.log" || true)
AUDIT_LINES=$(cat "$WORK"/gw/data/audit/access.audit.json* 2>/dev/null | wc -l || true)
stop_pid "$GW_PID"
rm -f "$WORK/gw/conf/audit.json"

if [[ $LOG_COMPARE == 1 ]]; then
    log "measuring idm-gateway (RUST_LOG=warn)"
    start_gateway "$GW2_PORT" warn
    PID_OF[gateway_warn]=$GW_PID
    RSS_BEFORE[gateway_warn]=$(rss "$GW_PID")
    THREADS_OF[gateway_warn]=$(threads_of "$GW_PID")
    measure_target gateway_warn
    RSS_AFTER[gateway_warn]=$(rss "$GW_PID")
    stop_pid "$GW_PID"
fi

# ---------------------------------------------------------------- report
echo
echo "## idm-gateway load benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'))"
echo
echo "Peak: \`wrk --latency -t2 -c$CONNS -d${PEAK_SECS}s\` (closed loop). Half-peak: benches/loadgen.rs at a fixed"
echo "rate of peak/2 over $CONNS keep-alive connections (open loop, coordinated-omission corrected),"
echo "${RATE_SECS}s measured after ${RATE_WARMUP}s warm-up. \"added p99\" = p99 through the proxy at its half-peak rate"
echo "minus p99 of the direct upstream at that same rate. Latencies in ms. GET of a $(printf %s "$BODY" | wc -c)-byte JSON body."
echo "Proxy workers: $THREADS (nginx worker_processes / gateway --threads); upstream nginx: $THREADS workers;"
echo "pingora settings (gateway and bare forwarder): workStealing=$WORK_STEALING, listenerTasksPerFd=$LISTENER_TASKS, upstreamKeepalivePoolSize=$POOL."
echo "loadgen: $LOADGEN_THREADS threads. Server CPU per request: user+sys ticks of the target's processes during"
echo "the run divided by requests served (the direct row is the upstream alone; proxy rows exclude the upstream)."
echo "The gateway's RSS \"before load\" is after one authenticated request (argon2 verification included)."
echo
echo "| target | peak req/s | p50 | p99 | p99 at half-peak | added p99 vs direct |"
echo "|---|---:|---:|---:|---:|---:|"
for key in "${ORDER[@]}"; do
    if [[ $key == direct ]]; then
        added="—"
    else
        added=$(awk -v a="${HALF_P99[$key]}" -v b="${DIRECT_P99[$key]}" \
            'BEGIN {printf "%+.3f (direct %.3f)", a - b, b}')
    fi
    echo "| ${LABEL[$key]} | ${PEAK[$key]} | ${P50[$key]} | ${P99[$key]} | ${HALF_P99[$key]} @ ${HALF[$key]}/s | $added |"
done
echo
echo "| target | server CPU µs/request at peak (wrk) | server CPU µs/request at half-peak (fixed rate) |"
echo "|---|---:|---:|"
for key in "${ORDER[@]}"; do
    echo "| ${LABEL[$key]} | ${CPU_PER_REQ[$key]} | ${HALF_CPU[$key]} |"
done
echo
for key in gateway gateway_warn; do
    [[ -n ${RSS_BEFORE[$key]:-} ]] || continue
    echo "${LABEL[$key]}: VmRSS before load ${RSS_BEFORE[$key]}, after load ${RSS_AFTER[$key]}; OS threads ${THREADS_OF[$key]}"
done
echo "Access-log lines written by the RUST_LOG=info gateway: $ACCESS_LINES ($(du -h "$WORK/gw/gateway-info.log" | cut -f1))"
echo "Access audit events written (JSON handler) by the first gateway: ${AUDIT_LINES:-0}"
echo
echo "CPU idle before the run: ${IDLE_BEFORE}%; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "Note: load generator, proxy and upstream share the same $(nproc) CPU cores, so every number"
echo "here includes CPU contention between them (wrk alone uses up to 2 threads); compare rows"
echo "with each other, not with numbers from a machine where the load comes from elsewhere."
echo "On a shared VM, run-to-run variation of the peak req/s can exceed 30%: repeat before"
echo "drawing conclusions from small differences."
log "done"
