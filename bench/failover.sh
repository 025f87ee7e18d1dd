#!/usr/bin/env bash
# Failover benchmarks in the two-server lab, as root:
#   sudo bench/failover.sh            # 10 trials each, then 10 min of loss
#   SIPHA_BENCH_TRIALS=20 SIPHA_BENCH_LOSS_SECS=60 sudo -E bench/failover.sh
# 1. Client-observed outage (SIP OPTIONS every 50 ms to the service address)
#    after the master's Kamailio is killed: sip-ha with its default timings,
#    then keepalived (VRRP, advert_int 1, vrrp_script interval 1 fall 3) in
#    the same lab. Prints p50/p95 and the ratio sip-ha/keepalived.
# 2. 5% packet loss and 50 ms ± 100 ms jitter (both directions) on the link
#    between the servers: no false failover.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --release --test bench_failover -- --ignored --nocapture --test-threads=1 2>&1 |
  grep -E "sip-ha|keepalived|ratio|loss|test result|panicked"
