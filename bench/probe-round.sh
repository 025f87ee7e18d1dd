#!/usr/bin/env bash
# Probe-round latency and idle cost of the resident loop.
#   sudo bench/probe-round.sh [ROUNDS]
# 1. Starts a real Kamailio on 127.0.0.1 (a free port) and times ROUNDS
#    (default 2000) rounds of three probes: SIP OPTIONS over UDP, SIP
#    OPTIONS over TCP, and a TCP connect. Prints p50/p99 of a whole round.
# 2. Runs `sip-ha run --loop` with a 1 s interval for 60 s and reports CPU %
#    of one core and peak RSS. It runs alone: its peer is unreachable, so
#    the loop is in its hurried mode (a round every 250 ms), the busiest it
#    gets. Everything runs in a network namespace of its own with only
#    loopback, so no probe leaves the machine.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2000}
work=$(mktemp -d /tmp/sipha-bench.XXXXXX)
ns="sipha-bench-$$"
cleanup() {
  [ -n "${kpid:-}" ] && kill "$kpid" 2>/dev/null
  pkill -f "$work" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
inns() { ip netns exec "$ns" "$@"; }

cargo build --release --quiet --example probe_round --bin sip-ha
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mpath=$(dirname "$(find /usr/lib -name sl.so -path '*kamailio*' | head -1)")
cat > "$work/kamailio.cfg" <<CFG
#!KAMAILIO
debug=0
log_stderror=yes
children=2
tcp_children=2
disable_sctp=yes
listen=udp:127.0.0.1:$port
listen=tcp:127.0.0.1:$port
mpath="$mpath/"
loadmodule "sl.so"
request_route { sl_send_reply("200", "OK"); exit; }
CFG
inns kamailio -f "$work/kamailio.cfg" -DD -E -w "$work" -P "$work/k.pid" >"$work/k.log" 2>&1 &
kpid=$!
for _ in $(seq 50); do inns bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null && break; sleep 0.1; done

cat > "$work/sip-ha.toml" <<CFG
[cluster]
name = "bench"
service_address = "10.99.0.100/24"
state_dir = "$work/state"
[nodes.master]
address = "10.99.0.1"
interface = "lo"
[nodes.slave]
address = "10.99.0.2"
interface = "lo"
[health]
interval = "1s"
[[health.check]]
kind = "sip-options"
name = "sip-udp"
target = "sip:ping@127.0.0.1:$port"
[[health.check]]
kind = "sip-options"
name = "sip-tcp"
target = "sip:ping@127.0.0.1:$port;transport=tcp"
[[health.check]]
kind = "tcp"
target = "127.0.0.1:$port"
[peer]
witness = ["127.0.0.1"]
CFG
echo "== probe round: 3 probes against a local Kamailio ($rounds rounds)"
inns ./target/release/examples/probe_round "$work/sip-ha.toml" "$rounds"

echo "== idle loop, interval 1s, 60 s"
ip netns exec "$ns" ./target/release/sip-ha --config "$work/sip-ha.toml" --node master run --loop &
lpid=$!
sleep 60
read -r utime stime < <(awk '{print $14, $15}' "/proc/$lpid/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$lpid/status")
kill "$lpid"; wait "$lpid" 2>/dev/null || true
hz=$(getconf CLK_TCK)
python3 -c "print(f'loop cpu_percent_of_one_core={($utime+$stime)/$hz/60*100:.2f} peak_rss_mib={$hwm/1024:.1f}')"
