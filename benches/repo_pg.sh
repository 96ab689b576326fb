#!/usr/bin/env bash
# The store bench (benches/repo.rs: concurrent durable creates, read by id, indexed
# `userName eq`, keyset-paged scan) on a throwaway PostgreSQL server on this machine
# (fsync and synchronous_commit on), then on the embedded SQLite store, same build, same
# object count, for figures side by side.
#
#   bash benches/repo_pg.sh                         # 100 000 objects
#   REPO_BENCH_OBJECTS=1000000 bash benches/repo_pg.sh
#
# Prints the `repo-bench:` lines of each store. Knobs: REPO_BENCH_OBJECTS, PG_SHARED_BUFFERS
# (512MB), STORES ("postgres sqlite").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. benches/lib.sh
STORES=${STORES:-postgres sqlite}
TMP=$(mktemp -d /tmp/repo-pg-bench.XXXXXX)
cleanup() { stop_pg; rm -rf "$TMP"; }
trap cleanup EXIT
chmod 755 "$TMP"

cargo bench --bench repo --no-run --quiet 2>/dev/null
for store in $STORES; do
    echo "== $store"
    if [ "$store" = postgres ]; then
        start_pg "$TMP/pg"
        REPO_BENCH_STORE=$PG_URL cargo bench --bench repo --quiet -- \
            --warm-up-time 1 --measurement-time 5 2>&1 | grep -E "repo-bench:|time:"
        stop_pg
    else
        cargo bench --bench repo --quiet -- --warm-up-time 1 --measurement-time 5 2>&1 |
            grep -E "repo-bench:|time:"
    fi
done
