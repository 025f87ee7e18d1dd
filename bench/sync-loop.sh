#!/usr/bin/env bash
# A 1% change in loop mode against rsync, in the two-server lab, as root:
#   sudo bench/sync-loop.sh
#   SIPHA_BENCH_FILES=10000 sudo -E bench/sync-loop.sh   # a quicker run
# The master's loop watches a PBX-like tree of 100,000 small files
# (bench/gen-pbx-tree.py, as bench/sync.sh makes it); three times, 1% of
# them are rewritten at once, and the bench times how long after that the
# standby has every one of them (polled every 5 ms), then times
# `rsync -a --delete` of the same tree over the same sshd, in the same
# run. The loop's push for a change reads only what its watch saw change,
# and the standby trusts its manifest from the last push (see README,
# "Sync"); rsync stats every file on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --release --test sync_watch bench_sync_loop_against_rsync -- --ignored --nocapture --test-threads=1 2>&1 |
  grep -E "sync loop vs rsync|test result|panicked"
