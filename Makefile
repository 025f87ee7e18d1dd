# sip-ha: the commands a newcomer needs. Each installs what it needs.
.PHONY: build test demo bench

build:
	cargo build --release

# The whole suite, as CI runs it (needs root: namespaces, sshd, Kamailio).
test:
	bash scripts/test.sh

# Two servers and a client in network namespaces; the master's SIP service
# is killed; prints the failover timeline and both servers' `sip-ha -v`.
demo:
	bash scripts/install-test-deps.sh
	cargo test --release --test demo -- --ignored --nocapture --test-threads=1

bench:
	bash bench/probe-round.sh
	bash bench/failover.sh
