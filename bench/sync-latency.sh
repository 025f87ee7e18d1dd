#!/usr/bin/env bash
# Sync latency in loop mode, in the two-server lab, as root:
#   sudo bench/sync-latency.sh                     # 100 edits, 1000 other files
#   SIPHA_BENCH_EDITS=100 SIPHA_BENCH_FILES=100000 sudo -E bench/sync-latency.sh
# The master's loop watches <lab>/data (sync.interval 1h, so only the watch
# pushes); the bench writes a new content into one file 100 times, one edit
# after the other arrived (300 ms apart), and polls the slave's copy every
# millisecond. Prints p50/p95/min/max of write-to-standby time. The issue's
# target: p50 under 1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --release --test sync_watch bench_sync_latency -- --ignored --nocapture --test-threads=1 2>&1 |
  grep -E "sync latency|test result|panicked"
