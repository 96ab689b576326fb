#!/usr/bin/env bash
# The LDAP connector under load: reconciliation throughput system/ldap/account → managed/user
# and the latency of one indexed lookup, direct to slapd vs through the gateway.
#
#   bash benches/ldap.sh                 # N=50000 entries, M=2000 lookups
#   N=2000 M=200 bash benches/ldap.sh    # quick
#
# Builds the release gateway and the `ldap_query` bench, creates a throwaway OpenLDAP slapd
# in a temp dir (as tests/common/slapd.rs does: back_mdb, core/cosine/inetorgperson/nis,
# indexes objectClass, uid, cn, entryUUID, entryCSN, sssvlv) with N inetOrgPerson entries
# uid=user<i>,ou=people,dc=example,dc=com bulk-loaded by slapadd, and starts it and a gateway
# (shipped managed.json, the LDAP provisioner, mapping systemLdapAccounts_managedUser) on free
# loopback ports; both are stopped and the temp dir removed on exit. Then:
#   1. recon: the first run (every entry ABSENT → CREATE + link), then an unchanged re-run
#      (every entry CONFIRMED, nothing written): time, objects/s, the situation summary,
#      the gateway's RSS (VmRSS now, VmHWM = peak);
#   2. lookup latency of `uid=user<k>` for M random existing k, one at a time:
#      a. one process per lookup: `ldapsearch` vs `curl` to the gateway (both pay a process
#         spawn, so the absolute figures are mostly fork/exec + client start-up);
#      b. in process: benches/ldap_query.rs, one persistent ldap3 connection vs one
#         keep-alive HTTP client to the gateway (plus, to break the gateway's time down,
#         slapd given the connector's own filter and the gateway's HTTP+auth floor);
#   3. a markdown summary table.
# Knobs: N (50000), M (2000), THREADS (gateway workers, default nproc), KEEP_TMP (0),
# CASES ("recon spawn inproc").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
N=${N:-50000}
M=${M:-2000}
THREADS=${THREADS:-$(nproc)}
KEEP_TMP=${KEEP_TMP:-0}
CASES=${CASES:-recon spawn inproc}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SUFFIX=dc=example,dc=com
PEOPLE=ou=people,$SUFFIX
ROOT_DN=cn=admin,$SUFFIX
ROOT_PW=bench-ldap-pw
# The gateway's default admin credentials (IDM_GATEWAY_ADMIN_PASSWORD is not set below).
ADMIN=openidm-admin:openidm-admin
T0=$SECONDS
log() { printf '[ldap %4ds] %s\n' $((SECONDS - T0)) "$*" >&2; }

for bin in /usr/sbin/slapd /usr/sbin/slapadd; do
    [ -x "$bin" ] || { echo "$bin is missing (apt-get install slapd ldap-utils)" >&2; exit 1; }
done
command -v ldapsearch >/dev/null || { echo "ldapsearch is missing (apt-get install ldap-utils)" >&2; exit 1; }

log "building (release)…"
cargo build --release --quiet
cargo bench --quiet --no-run --bench ldap_query 2>/dev/null
BIN=$TARGET_DIR/release/idm-gateway

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ldap-bench.XXXXXX")
SLAPD_PID=
GW_PID=
cleanup() {
    for p in $GW_PID $SLAPD_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    if [ "$KEEP_TMP" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$TMP/slapd/data" "$TMP/conf" "$TMP/data" "$TMP/certs"

. benches/lib.sh

# --- 1. slapd -------------------------------------------------------------------------------
cat >"$TMP/slapd/slapd.conf" <<EOF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile $TMP/slapd/slapd.pid
argsfile $TMP/slapd/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload sssvlv
sizelimit unlimited
database mdb
maxsize 4294967296
suffix "$SUFFIX"
rootdn "$ROOT_DN"
rootpw $ROOT_PW
directory $TMP/slapd/data
index objectClass eq
index uid,cn eq
index entryUUID eq
index entryCSN eq
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
overlay sssvlv
EOF

log "generating and slapadd-ing $N entries…"
python3 - "$N" "$SUFFIX" "$PEOPLE" >"$TMP/slapd/init.ldif" <<'EOF'
import sys
n, suffix, people = int(sys.argv[1]), sys.argv[2], sys.argv[3]
w = sys.stdout.write
w(f"dn: {suffix}\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\n"
  f"o: Example\ndc: example\n\n"
  f"dn: {people}\nobjectClass: top\nobjectClass: organizationalUnit\nou: people\n\n")
for i in range(n):
    w(f"dn: uid=user{i},{people}\nobjectClass: top\nobjectClass: person\n"
      f"objectClass: organizationalPerson\nobjectClass: inetOrgPerson\nuid: user{i}\n"
      f"cn: User {i}\nsn: Sn{i}\ngivenName: Given{i}\nmail: user{i}@example.com\n\n")
EOF
start=$(date +%s.%N)
/usr/sbin/slapadd -q -b "$SUFFIX" -f "$TMP/slapd/slapd.conf" -l "$TMP/slapd/init.ldif" \
    >"$TMP/slapd/slapadd.log" 2>&1 || { cat "$TMP/slapd/slapadd.log" >&2; exit 1; }
SLAPADD_SECS=$(echo "$(date +%s.%N) - $start" | bc)
LDAP_PORT=$(free_port)
LDAP_URL=ldap://127.0.0.1:$LDAP_PORT
/usr/sbin/slapd -d 0 -f "$TMP/slapd/slapd.conf" -h "$LDAP_URL/" </dev/null >/dev/null 2>"$TMP/slapd/slapd.log" &
SLAPD_PID=$!
wait_for 20 ldapsearch -x -H "$LDAP_URL" -s base -b "$SUFFIX" dn ||
    { echo "slapd did not start:" >&2; cat "$TMP/slapd/slapd.log" >&2; exit 1; }
log "slapd on $LDAP_URL (slapadd $(printf '%.1f' "$SLAPADD_SECS") s, $(du -sh "$TMP/slapd/data" | cut -f1) mdb)"

# --- 2. gateway -----------------------------------------------------------------------------
python3 - "$TMP/conf" "$LDAP_PORT" "$ROOT_DN" "$SUFFIX" <<'EOF'
import json, sys
conf, port, root_dn, suffix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
json.dump(json.load(open("conf/managed.json")), open(f"{conf}/managed.json", "w"))
prop = lambda native, **kw: {"type": "string", "nativeName": native, "nativeType": "string", **kw}
json.dump({
    "name": "ldap", "enabled": True,
    "connectorRef": {"bundleName": "org.forgerock.openicf.connectors.ldap-connector",
                     "bundleVersion": "[1.4.0.0,1.6.0.0)",
                     "connectorName": "org.identityconnectors.ldap.LdapConnector"},
    "configurationProperties": {
        "host": "127.0.0.1", "port": port, "ssl": False,
        "principal": root_dn, "credentials": "&{LDAP_BIND_PASSWORD}",
        "baseContexts": [suffix],
        "accountObjectClasses": ["top", "person", "organizationalPerson", "inetOrgPerson"],
        "accountUserNameAttributes": ["uid"], "uidAttribute": "entryUUID"},
    "operationTimeout": {"SEARCH": 60000, "GET": 5000},
    "objectTypes": {"account": {
        "$schema": "http://json-schema.org/draft-03/schema", "id": "__ACCOUNT__",
        "type": "object", "nativeType": "__ACCOUNT__",
        "properties": {
            "dn": prop("__NAME__", required=True), "uid": prop("uid"),
            "cn": prop("cn", required=True), "sn": prop("sn", required=True),
            "givenName": prop("givenName"), "mail": prop("mail")}}}},
    open(f"{conf}/provisioner.openicf-ldap.json", "w"), indent=1)
json.dump({"mappings": [{
    "name": "systemLdapAccounts_managedUser",
    "source": "system/ldap/account", "target": "managed/user",
    # managed/user requires givenName: cn stands in for it, as in tests/system_ldap.rs.
    "properties": [{"source": "uid", "target": "userName"}, {"source": "cn", "target": "givenName"},
                   {"source": "sn", "target": "sn"}, {"source": "mail", "target": "mail"}],
    "correlationQuery": {"_queryFilter": "userName eq \"${source.uid}\""},
    "policies": [{"situation": "ABSENT", "action": "CREATE"},
                 {"situation": "CONFIRMED", "action": "UPDATE"},
                 {"situation": "FOUND", "action": "UPDATE"}],
    # The runs below measure recon, not implicit sync.
    "enableSync": False}]},
    open(f"{conf}/sync.json", "w"), indent=1)
EOF
GW_PORT=$(free_port)
GW_URL=http://127.0.0.1:$GW_PORT
unset "${!IDM_GATEWAY_@}" 2>/dev/null || true
LDAP_BIND_PASSWORD=$ROOT_PW RUST_LOG=warn "$BIN" --conf "$TMP/conf" --data "$TMP/data" \
    --certs "$TMP/certs" --listen "127.0.0.1:$GW_PORT" --threads "$THREADS" >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
wait_for 20 curl -sf "$GW_URL/openidm/info/ping" ||
    { echo "the gateway did not start:" >&2; cat "$TMP/gateway.log" >&2; exit 1; }
curl -sf -u "$ADMIN" "$GW_URL/openidm/system/ldap/account?_queryFilter=uid%20eq%20%22user0%22&_fields=uid" |
    grep -q '"resultCount":1' || { echo "the gateway cannot read LDAP:" >&2; cat "$TMP/gateway.log" >&2; exit 1; }
log "gateway on $GW_URL ($THREADS threads)"

rss_mb() { awk -v k="$1" '$1 == k":" {printf "%d", $2 / 1024}' "/proc/$GW_PID/status"; }
SUMMARY=()
row() {
    local s='|' c
    for c in "$@"; do s+=" $c |"; done
    SUMMARY+=("$s")
}

echo
echo "## LDAP connector benchmark ($(date -u +%FT%TZ), $(nproc) cores, N=$N entries, M=$M lookups)"

# --- 3. recon -------------------------------------------------------------------------------
# recon LABEL EXPECTED_SITUATION DESCRIPTION
recon() {
    local label=$1 want=$2 what=$3 start end secs id
    start=$(date +%s.%N)
    id=$(curl -sf -u "$ADMIN" -X POST \
        "$GW_URL/openidm/recon?_action=recon&mapping=systemLdapAccounts_managedUser&waitForCompletion=true" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["_id"])')
    end=$(date +%s.%N)
    secs=$(echo "$end - $start" | bc)
    curl -sf -u "$ADMIN" "$GW_URL/openidm/recon/$id" >"$TMP/recon-$label.json"
    local out
    out=$(python3 - "$TMP/recon-$label.json" "$label" "$secs" "$N" "$want" <<'EOF'
import json, sys
run, label, secs, n, want = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
sits = {k: v for k, v in run["situationSummary"].items() if v}
ok = run["state"] == "SUCCESS" and sits.get(want) == n
print(f"{secs:.2f} {n / secs:.0f} {'OK' if ok else 'MISMATCH'}")
print(f"recon {label:9s} {run['state']:8s} {secs:7.2f} s  {n / secs:7.0f} objects/s  "
      f"situations={sits} ({want} == {n}: {'yes' if ok else 'NO'}) status={run['statusSummary']}")
EOF
    )
    local stats verdict
    stats=$(head -1 <<<"$out")
    tail -n +2 <<<"$out"
    read -r secs rate verdict <<<"$stats"
    echo "                gateway VmRSS $(rss_mb VmRSS) MB, VmHWM (peak) $(rss_mb VmHWM) MB"
    row "recon $label, N=$N ($what)" "$secs s" "$rate objects/s" "$(rss_mb VmHWM) MB peak"
    [ "$verdict" = OK ] || { echo "recon $label: unexpected result, see $TMP/recon-$label.json" >&2; KEEP_TMP=1; exit 1; }
}
case " $CASES " in *" recon "*)
    echo
    echo "after start: gateway VmRSS $(rss_mb VmRSS) MB"
    recon first ABSENT "ABSENT → CREATE + link"
    recon unchanged CONFIRMED "CONFIRMED, nothing written"
    count=$(curl -sf -u "$ADMIN" "$GW_URL/openidm/managed/user?_queryFilter=true&_pageSize=1&_totalPagedResultsPolicy=EXACT&_fields=_id" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["totalPagedResults"])')
    echo "managed/user now holds $count users"
esac

# --- 4. lookup latency ----------------------------------------------------------------------
# stats FILE (µs, one a line) → "p50 p90 p99 mean" in ms
stats() {
    python3 - "$1" <<'EOF'
import sys
v = sorted(int(x) for x in open(sys.argv[1]))
q = lambda p: v[min(len(v) - 1, int(p * len(v)))] / 1000
print(f"{q(.5):.3f} {q(.9):.3f} {q(.99):.3f} {sum(v) / len(v) / 1000:.3f}")
EOF
}
UIDS=$(python3 -c "import random; r = random.Random(42); print(' '.join(str(r.randrange($N)) for _ in range($M)))")
WARM=$(python3 -c "import random; r = random.Random(7); print(' '.join(str(r.randrange($N)) for _ in range(20)))")
ldap_one() { ldapsearch -x -LLL -H "$LDAP_URL" -D "$ROOT_DN" -w "$ROOT_PW" -b "$PEOPLE" "(uid=user$1)" uid cn sn mail; }
gw_one() { curl -s -u "$ADMIN" "$GW_URL/openidm/system/ldap/account?_queryFilter=uid%20eq%20%22user$1%22&_fields=uid,cn,sn,mail"; }
# timed NAME FUNC EXPECT_PATTERN_PREFIX: M timed calls (µs to $TMP/NAME.us), output checked.
timed() {
    local name=$1 fn=$2 k t0 t1 out
    for k in $WARM; do "$fn" "$k" >/dev/null; done
    : >"$TMP/$name.us"
    for k in $UIDS; do
        t0=$EPOCHREALTIME
        out=$("$fn" "$k")
        t1=$EPOCHREALTIME
        case $name in
            direct) [[ $out == *"uid: user$k"$'\n'* ]] ;;
            *) [[ $out == *'"uid":'*'"user'$k'"'* && $out == *'"resultCount":1'* ]] ;;
        esac || { echo "$name lookup of user$k: unexpected answer: $out" >&2; exit 1; }
        echo $((${t1/[.,]/} - ${t0/[.,]/})) >>"$TMP/$name.us"
    done
}
case " $CASES " in *" spawn "*)
    echo
    echo "lookup latency, one process per lookup (ldapsearch vs curl: both pay a fork/exec and"
    echo "client start-up, timed around the call), $M sequential random uids (+20 warm-up):"
    timed direct ldap_one
    timed gateway gw_one
    read -r d50 d90 d99 dmean <<<"$(stats "$TMP/direct.us")"
    read -r g50 g90 g99 gmean <<<"$(stats "$TMP/gateway.us")"
    printf '  %-22s p50 %7.3f ms  p90 %7.3f ms  p99 %7.3f ms  mean %7.3f ms\n' \
        "ldapsearch (direct)" "$d50" "$d90" "$d99" "$dmean" "curl (gateway)" "$g50" "$g90" "$g99" "$gmean"
    ratio50=$(echo "scale=2; $g50 / $d50" | bc)
    ratiomean=$(echo "scale=2; $gmean / $dmean" | bc)
    echo "  ratio gateway/direct: p50 ${ratio50}x  mean ${ratiomean}x"
    row "lookup, ldapsearch process (direct)" "mean $dmean ms" "p50/p90/p99 $d50 / $d90 / $d99 ms" ""
    row "lookup, curl process (gateway)" "mean $gmean ms" "p50/p90/p99 $g50 / $g90 / $g99 ms" \
        "$(rss_mb VmHWM) MB peak; ${ratio50}x direct (p50)"
esac
case " $CASES " in *" inproc "*)
    echo
    cargo bench --quiet --bench ldap_query -- --ldap-url "$LDAP_URL" --bind-dn "$ROOT_DN" \
        --bind-pw "$ROOT_PW" --gateway-url "$GW_URL" --entries "$N" --n "$M" \
        --user "${ADMIN%%:*}" --password "${ADMIN#*:}" 2>"$TMP/ldap_query.err" | tee "$TMP/ldap_query.out" ||
        { cat "$TMP/ldap_query.err" >&2; exit 1; }
    result=$(grep '^RESULT ' "$TMP/ldap_query.out")
    declare -A R
    for kv in ${result#RESULT }; do R[${kv%%=*}]=${kv#*=}; done
    row "lookup, in process, ldap3 connection (direct)" "mean ${R[direct_mean_ms]} ms" \
        "p50/p90/p99 ${R[direct_p50_ms]} / ${R[direct_p90_ms]} / ${R[direct_p99_ms]} ms" ""
    row "lookup, in process, keep-alive HTTP (gateway)" "mean ${R[gateway_mean_ms]} ms" \
        "p50/p90/p99 ${R[gateway_p50_ms]} / ${R[gateway_p90_ms]} / ${R[gateway_p99_ms]} ms" \
        "$(rss_mb VmHWM) MB peak; ${R[ratio_p50]}x direct (p50), ${R[ratio_mean]}x (mean)"
    row "breakdown (p50): slapd with the connector's filter / gateway HTTP+auth floor (info/login)" \
        "" "${R[direct_conn_p50_ms]} ms / ${R[floor_p50_ms]} ms" ""
esac

# --- 5. summary -----------------------------------------------------------------------------
echo
echo "| case | time | objects/s or latency | gateway RSS |"
echo "|---|---:|---:|---:|"
printf '%s\n' "${SUMMARY[@]}"
log done
