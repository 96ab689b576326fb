#!/usr/bin/env bash
# CSV bulk import: rows/s and the gateway's peak RSS (VmHWM) for 10 000 and 100 000 rows.
#
#   bash benches/csv_import.sh              # debug build (what `cargo test` builds)
#   RELEASE=1 bash benches/csv_import.sh    # release build
#   CSV_BENCH_ROWS=300000 bash benches/csv_import.sh
#
# Runs the ignored harness `bench_import_rows_and_peak_rss` of tests/csv_import.rs: for each
# size a fresh gateway (shipped managed.json) gets one multipart upload of N users
# (userName,givenName,sn,mail,description) with uniqueProperty=userName; the time runs from
# the upload to the import record's `end`, every row created through the managed layer
# (policies, hooks, group-committed store writes). RSS is read from /proc/<pid>/status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
profile=()
if [ "${RELEASE:-0}" = 1 ]; then
    profile=(--release)
fi
cargo test "${profile[@]}" --test csv_import bench_import_rows_and_peak_rss -- --ignored --nocapture 2>&1 \
    | grep -E '^csv import:|test result'
