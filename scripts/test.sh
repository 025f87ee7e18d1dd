#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine, as root:
#   sudo scripts/test.sh
# It installs the real parts the tests talk to (sshd, Kamailio, ...) from
# Debian's archive, then runs every test of the workspace. The lab tests
# create network namespaces, which needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (the tests make network namespaces and start sshd)" >&2
  exit 2
fi
bash scripts/install-test-deps.sh
cargo test --workspace --all-targets --locked
