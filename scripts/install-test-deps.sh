#!/usr/bin/env bash
# Installs, from Debian's archive, every real part the test suite talks to:
# sshd, Kamailio (the SIP service), sipp, keepalived and rsync (for the
# benchmarks), an SMTP server, a sendmail and openssl, snmptrapd, arping,
# iproute2 (namespaces), nftables (packet loss in the two-server lab) and
# iptables (its NFQUEUE target hands packets to the lab's delayer: delay and
# jitter without netem).
# Safe to run again; it only installs what is missing.
set -euo pipefail

pkgs=(
  openssh-server openssh-client   # the peer transport (real sshd in the lab)
  kamailio                        # the real SIP server tests probe and fail over
  sip-tester sipsak               # SIP clients for the watching client
  iproute2 iputils-ping arping    # namespaces, veth, bridge, tc netem, ARP
  nftables                        # packet loss in the lab where the kernel has no netem
  iptables                        # NFQUEUE: delay and jitter in the lab without netem
  keepalived rsync                # what the benchmarks compare against
  python3-aiosmtpd                # a real SMTP server for the alert tests
  msmtp                           # a real sendmail (relays to aiosmtpd) for the sendmail transport
  openssl                         # a private CA and certificate for the STARTTLS / TLS mail tests
  snmptrapd snmp                  # a real trap receiver
  rsyslog                         # a real syslog daemon
  procps psmisc util-linux sqlite3 # ps/pkill/unshare and the astdb snapshot tests
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps daemons we do not want from being pulled in;
  # policy-rc.d stops the packages' own services from starting at install.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
