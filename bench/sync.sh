#!/usr/bin/env bash
# Sync benchmark: sip-ha against `rsync -a --delete`, over the same sshd
# and the same cipher, in one run, as root:
#   sudo bench/sync.sh
#   SMALL=10000 BIG=2 sudo -E bench/sync.sh      # a quicker, smaller run
#   FRESH_FS=1 sudo -E bench/sync.sh              # on a new ext4 of its own
#   KEEP=1 sudo -E bench/sync.sh                  # leave the trees in place
#
# FRESH_FS=1 runs everything on a new, journalled ext4 made in a sparse
# 40 GiB image under /var/tmp and loop-mounted, removed at the end: a
# second view when the machine's own file system skews the first copies
# (on a journal-less ext4, inodes freed in the last few minutes, such as
# the previous run's trees, are skipped one by one by every file created,
# so whichever tool copies first pays for the previous run's deletions).
# It has its own skew: a flush goes through the loop device to the image
# file and then to the disk, and sip-ha flushes what it writes while
# rsync does not.
#
# The tree is PBX-like (bench/gen-pbx-tree.py): SMALL files of 1-64 KiB
# (voicemail, recordings; default 100,000), 300 configs, BIG recordings of
# 100-256 MiB (default 20). Both tools push it to their own copy through
# one sshd on loopback inside a network namespace (Ciphers
# aes128-gcm@openssh.com on both). Scenarios, in order:
#   first-small  first copy of the small files and configs
#   first-big    then the big files are added: first copy of those, also
#                against raw `ssh cat > file` of the same bytes
#   no-change    nothing changed
#   1pct         1% of the small files rewritten
#   poke         one byte changed in the middle of a 256 MiB file
#   append       1 MiB appended to that file
# After first-small, no-change and 1pct, a "floor" line times the least
# that any tool could do there on this machine, in the same run, so that a
# ratio can be read against what is reachable at all:
#   first-small  `tar c | ssh tar x` of the same tree (no per-file checks,
#                no flush): a plain streaming copy
#   no-change    both trees stat-walked at once by `find` (a tool that
#                compares by stat must at least do this, on both servers;
#                here they share this machine's cores, as the two tools do)
#   1pct         that stat walk plus `tar | ssh tar x` of exactly the
#                rewritten files, as if a tool knew them without comparing
# The floor's own ssh runs over a kept connection (ControlMaster), as
# sip-ha's do, so no handshake is counted. Best of 3 for the stat walk.
# Each line gives both times, the ratio rsync/sip-ha (above 1: sip-ha is
# faster), bytes on the loopback (everything SSH carried, both ways) and,
# for sip-ha, its own count of protocol bytes and data bytes sent. Peak RSS
# of each side of each tool is printed at the end (/usr/bin/time -f %M).
# The page cache is warm for both tools (the tree was just written), and
# nothing is left dirty in it before each timed run (`sync`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench/sync.sh: run as root" >&2; exit 2; }
for tool in rsync sshd ssh-keygen /usr/bin/time python3; do
  command -v "$tool" >/dev/null || {
    echo "bench/sync.sh: $tool is missing: run scripts/install-test-deps.sh" >&2
    exit 2
  }
done
SMALL=${SMALL:-100000}
BIG=${BIG:-20}
B=${BENCH_DIR:-/var/tmp/sip-ha-bench-sync}
NS=sipha-bench-sync
PORT=2222
CIPHER=aes128-gcm@openssh.com

cargo build --release --quiet
SIPHA=$PWD/target/release/sip-ha
GEN="python3 $PWD/bench/gen-pbx-tree.py"

IMAGE=/var/tmp/sip-ha-bench-sync.img
cleanup() {
  # The SSH session sip-ha kept for its next sync (see README, State and
  # logs), then sshd.
  for sock in "$B"/state/ssh/.ssh-connection*/master "$B/floor-ssh"; do
    [ -S "$sock" ] && ssh -S "$sock" -O exit bench >/dev/null 2>&1 || true
  done
  [ -f "$B/sshd.pid" ] && kill "$(cat "$B/sshd.pid")" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  if [ -n "${FRESH_FS:-}" ] && mountpoint -q "$B"; then
    umount "$B" && rm -f "$IMAGE"
  fi
}
# The trees are removed at the end (KEEP=1 keeps them), and when: on an
# ext4 without a journal (as this machine's own disk is), every file
# created skips, one by one, the inodes freed in the last 60 s (360 s while
# their inode table block is dirty, which creating files makes it): the
# kernel's recently_deleted() in fs/ext4/ialloc.c. A first copy made
# minutes after 200,000 files were removed pays for each of them, and the
# later copies pay more, as the free inodes left are the recent ones:
# measured here 12.6 s, 34 s and 58 s for sip-ha, rsync and tar in that
# order. So a run waits until the previous run's removal is 400 s old.
REMOVED=/var/tmp/sip-ha-bench-sync.removed
remove_trees() {
  if [ -d "$B" ] && ! mountpoint -q "$B" && [ -n "$(ls -A "$B")" ]; then
    rm -rf "$B"
    date +%s >"$REMOVED"
  fi
}
at_exit() {
  cleanup
  [ -n "${KEEP:-}" ] || remove_trees
}
trap at_exit EXIT
cleanup
remove_trees
removed_at=$(cat "$REMOVED" 2>/dev/null || true)
if [ -n "$removed_at" ] && ! [[ "$removed_at" =~ ^[0-9]+$ ]]; then
  echo "bench/sync.sh: ignoring $REMOVED: not a time in seconds (\"$removed_at\")" >&2
  removed_at=""
fi
if [ -z "${FRESH_FS:-}" ] && [ -n "$removed_at" ]; then
  age=$(($(date +%s) - removed_at))
  if [ "$age" -lt 400 ]; then
    echo "bench/sync.sh: the previous run's trees were removed ${age} s ago; waiting $((400 - age)) s so that the first copies do not pay for it (see remove_trees)" >&2
    sleep $((400 - age))
  fi
fi
if [ -n "${FRESH_FS:-}" ]; then
  command -v mkfs.ext4 >/dev/null || { echo "bench/sync.sh: FRESH_FS needs mkfs.ext4 (e2fsprogs)" >&2; exit 2; }
  rm -f "$IMAGE"
  truncate -s 40G "$IMAGE"
  mkfs.ext4 -q -F "$IMAGE"
  mkdir -p "$B"
  mount -o loop "$IMAGE" "$B"
fi
mkdir -p "$B"/{src,dst-sipha,dst-rsync,dst-tar,state,raw}
SRC=$B/src/pbx
DST_SIPHA=$B/dst-sipha/$(echo "$SRC" | sed 's|^/||')
mkdir -p "$SRC"

echo "generating $SMALL small files and 300 configs..." >&2
$GEN small "$SRC" "$SMALL"

# --- sshd on loopback in a namespace of our own -------------------------
ip netns add "$NS"
ip -n "$NS" link set lo up
ssh-keygen -q -t ed25519 -N '' -f "$B/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$B/sipha_key"
ssh-keygen -q -t ed25519 -N '' -f "$B/rsync_key"
cat >"$B/sshd_config" <<CONF
ListenAddress 127.0.0.1:$PORT
HostKey $B/host_key
PidFile $B/sshd.pid
AuthorizedKeysFile $B/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Ciphers $CIPHER
PrintMotd no
# Sessions start without this build machine's shell setup: sshd runs every
# command through the user's shell, and bash reads ~/.bashrc when sshd
# starts it as a top-level shell, which SHLVL=1 says it is not. Root's
# here runs pyenv init, ~0.1 s per session, for both tools alike; a PBX's
# root has Debian's few lines.
SetEnv SHLVL=1
CONF
echo "127.0.0.1 $(cat "$B/host_key.pub" | cut -d' ' -f1,2)" >"$B/known_hosts"
echo "[127.0.0.1]:$PORT $(cat "$B/host_key.pub" | cut -d' ' -f1,2)" >>"$B/known_hosts"
cat >"$B/sip-ha.toml" <<CONF
# bench/sync.sh: this node is the master, the peer is the same machine
# through sshd, receiving under $B/dst-sipha.
[cluster]
name = "bench"
service_address = "192.0.2.121/24"
state_dir = "$B/state"

[nodes.master]
address = "127.0.0.2"
interface = "lo"

[nodes.slave]
address = "127.0.0.1"
interface = "lo"

[ssh]
user = "root"
port = $PORT
identity = "$B/sipha_key"
known_hosts = "$B/known_hosts"
remote_command = "$SIPHA"

[peer]
witness = ["127.0.0.3"]

[[sync.path]]
path = "$SRC"
CONF
{
  echo "restrict,command=\"/usr/bin/time -f %M -a -o $B/rss-sipha-receiver $SIPHA --config $B/sip-ha.toml --node slave serve --sync-prefix $B/dst-sipha\" $(cat "$B/sipha_key.pub")"
  echo "$(cat "$B/rsync_key.pub")"
} >"$B/authorized_keys"
mkdir -p /run/sshd
ip netns exec "$NS" /usr/sbin/sshd -f "$B/sshd_config"
RSH="ssh -F /dev/null -i $B/rsync_key -p $PORT -c $CIPHER -o UserKnownHostsFile=$B/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"

in_ns() { ip netns exec "$NS" "$@"; }
lo_bytes() { in_ns cat /sys/class/net/lo/statistics/tx_bytes; }
now() { date +%s.%N; }

# Each timed run starts with nothing dirty in the page cache: rsync never
# flushes, and the disk writing back its last gigabytes would otherwise
# slow whichever run comes next (sip-ha's fsyncs most of all).
# Twice: with FRESH_FS, the first pass can leave the loop device's writes
# dirty in the image file's own pages.
settle() { sync; sync; }

run_sipha() { # prints: seconds lo-bytes "summary"
  local t0 b0 t1 b1 out
  settle
  b0=$(lo_bytes); t0=$(now)
  out=$(in_ns /usr/bin/time -f %M -a -o "$B/rss-sipha-sender" \
    "$SIPHA" --config "$B/sip-ha.toml" --node master sync 2>&1) || {
    echo "sip-ha sync failed: $out" >&2; exit 1; }
  t1=$(now); b1=$(lo_bytes)
  echo "$(echo "$t1 - $t0" | bc -l) $((b1 - b0)) $(echo "$out" | grep '^sync:' | tail -1)"
}
run_rsync() { # prints: seconds lo-bytes
  local t0 b0 t1 b1
  settle
  b0=$(lo_bytes); t0=$(now)
  in_ns /usr/bin/time -f %M -a -o "$B/rss-rsync-sender" \
    rsync -a --delete -e "$RSH" \
    --rsync-path="/usr/bin/time -f %M -a -o $B/rss-rsync-receiver rsync" \
    "$SRC/" "root@127.0.0.1:$B/dst-rsync/" >/dev/null
  t1=$(now); b1=$(lo_bytes)
  echo "$(echo "$t1 - $t0" | bc -l) $((b1 - b0))"
}
scenario() { # name
  local s r
  s=$(run_sipha); r=$(run_rsync)
  LAST_RSYNC=${r%% *}
  set -- $s
  local st=$1 sb=$2; shift 2
  local summary="$*"
  set -- $r
  printf '%-12s sip-ha %8.3f s %12d B   rsync %8.3f s %12d B   rsync/sip-ha %6.2f\n' \
    "$NAME" "$st" "$sb" "$1" "$2" "$(echo "$1 / $st" | bc -l)"
  printf '%-12s   sip-ha said: %s\n' "" "$summary"
  printf '%-12s   peak RSS KiB: sip-ha sender %s receiver %s; rsync sender %s receiver %s\n' "" \
    "$(tail -1 "$B/rss-sipha-sender")" "$(tail -1 "$B/rss-sipha-receiver" 2>/dev/null)" \
    "$(tail -1 "$B/rss-rsync-sender")" "$(tail -1 "$B/rss-rsync-receiver" 2>/dev/null)"
}
check_same() {
  if ! diff -r -q -x .sip-ha-trash "$SRC" "$DST_SIPHA" >/dev/null || ! diff -r -q "$SRC" "$B/dst-rsync" >/dev/null; then
    echo "bench/sync.sh: after $NAME the copies differ from the source" >&2
    exit 1
  fi
}

# This node is the active one (sip-ha sync refuses on a standby): its
# state file says so, as after a pass that took the address.
"$SIPHA" --config "$B/sip-ha.toml" --node master check-config >/dev/null
cat >"$B/state/state.json" <<J
{"format": 1, "node": "master", "updated_ms": 0, "memory": {"stance": "active", "active": "master"}}
J

# --- floors: the least any tool could do (see the top) -----------------
in_ns $RSH -M -S "$B/floor-ssh" -fN root@127.0.0.1
FLOOR_RSH="$RSH -S $B/floor-ssh"
LAST_RSYNC=0
secs() { echo "$2 - $1" | bc -l; }
floor_line() { # label seconds rsync-seconds what
  printf '%-12s floor    %8.3f s   rsync/floor %6.2f   (%s)\n' "$1" "$2" "$(echo "$3 / $2" | bc -l)" "$4"
}
tar_into_floor() { # [file listing the paths to copy]; prints seconds
  local t0 t1
  settle
  t0=$(now)
  if [ $# -gt 0 ]; then
    tar -C "$SRC" -cf - -T "$1" | in_ns $FLOOR_RSH root@127.0.0.1 "tar -C $B/dst-tar -xf -"
  else
    tar -C "$SRC" -cf - . | in_ns $FLOOR_RSH root@127.0.0.1 "tar -C $B/dst-tar -xf -"
  fi
  t1=$(now)
  secs "$t0" "$t1"
}
stat_floor() { # prints the best of 3, in seconds
  local best="" t0 t1 t i
  for i in 1 2 3; do
    settle
    t0=$(now)
    find "$SRC" -printf '%s %T@ %C@ %i %m %U %G\n' >/dev/null &
    find "$DST_SIPHA" -printf '%s %T@ %C@ %i %m %U %G\n' >/dev/null
    wait
    t1=$(now)
    t=$(secs "$t0" "$t1")
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  echo "$best"
}

echo "sip-ha $("$SIPHA" --version | cut -d' ' -f2), $(rsync --version | head -1), $SMALL small files, $BIG big" >&2
NAME=first-small; scenario; check_same
floor_line first-small "$(tar_into_floor)" "$LAST_RSYNC" "tar | ssh tar x of the same tree"
echo "generating $BIG big files..." >&2
$GEN big "$SRC" "$BIG"
NAME=first-big; scenario; check_same
# Raw ssh cat of the same bytes, for the throughput comparison: one
# stream over one connection (as one sync is), written to disk there; then
# the same, flushed to disk before it ends (dd conv=fsync), as sip-ha does
# before it puts a file in place (rsync does not flush).
bytes=$(du -cb "$SRC"/monitor/*.wav | tail -1 | cut -f1)
raw_copy() { # label remote-command
  local t0 t1 raw
  settle
  t0=$(now)
  cat "$SRC"/monitor/*.wav | in_ns $RSH root@127.0.0.1 "$2"
  t1=$(now)
  raw=$(echo "$t1 - $t0" | bc -l)
  printf '%-12s %s %8.3f s for %d bytes (%.1f MB/s)\n' "ssh-cat" "$1" "$raw" "$bytes" "$(echo "$bytes / $raw / 1000000" | bc -l)"
  rm -f "$B/raw/all.wav"
}
raw_copy "raw ssh cat          " "cat > $B/raw/all.wav"
raw_copy "raw ssh cat + fsync  " "dd of=$B/raw/all.wav bs=1M conv=fsync status=none"
NAME=no-change; scenario
STAT_FLOOR=$(stat_floor)
floor_line no-change "$STAT_FLOOR" "$LAST_RSYNC" "find on both trees at once"
NAME=1pct; $GEN touch "$SRC" 1 list | tail -n +2 | sed "s|^$SRC/||" >"$B/touched"; scenario; check_same
floor_line 1pct "$(echo "$STAT_FLOOR + $(tar_into_floor "$B/touched")" | bc -l)" "$LAST_RSYNC" \
  "that find, plus tar | ssh tar x of the $(wc -l <"$B/touched") rewritten files"
LAST=$(ls "$SRC"/monitor/*.wav | tail -1)
NAME=poke; $GEN poke "$LAST"; scenario; check_same
NAME=append; $GEN append "$LAST"; scenario; check_same
echo "peak RSS KiB: sip-ha sender $(sort -n "$B/rss-sipha-sender" | tail -1), receiver $(sort -n "$B/rss-sipha-receiver" | tail -1); rsync sender $(sort -n "$B/rss-rsync-sender" | tail -1), receiver $(sort -n "$B/rss-rsync-receiver" | tail -1)"
