#!/usr/bin/env bash
# Attacks on srdma-server over real verbs (CTest label "security").
# Each case runs a control that shows the attack would work without the
# defence, then the attack. Usage: security.sh CASE.
set -uo pipefail
. "$(dirname "$0")/harness.sh"

# A write that did not land: the NAK's remote access error, or flushed when
# the server had already torn the QP down (rxe can do either).
refused='^wc: (remote access error|Work Request Flushed Error)$'

case "${1:-}" in
stale-rkey)
	# Defence: each connection's memory is deregistered at teardown, so an
	# old rkey is dead.
	start_server
	rogue a
	out=$(rogue_do a "write own own")
	echo "control, A writes its window while connected: $out"
	[ "$out" = "wc: success" ] || fail "control: A's own write failed"
	rogue_end a
	wait_for "$tmp/server.log" 'client 1: closed' 30 || fail "A's connection did not close"
	# B must not have been handed A's rkey again by chance (rxe may reuse
	# an MR index; its 8-bit key then differs with probability 255/256).
	for try in 1 2 3; do
		rogue "b$try"
		brkey=b${try}_rkey
		[ "${!brkey}" != "$a_rkey" ] && break
		echo "B got A's rkey value for its own window; new B"
		rogue_end "b$try"
	done
	[ "${!brkey}" != "$a_rkey" ] || fail "three new connections reused A's rkey"
	out=$(rogue_do "b$try" "write $a_rkey $a_addr")
	echo "attack, B writes with A's old rkey $a_rkey at $a_addr: $out"
	grep -qE "$refused" <<<"$out" || fail "a write with a stale rkey was not refused"
	wait_for "$tmp/server.log" "client $((try + 1)): closed: QP error" 30 ||
		fail "the attacking connection was not torn down"
	out=$(printf 'send still serving\nquit\n' | client localhost)
	grep -q '^echo: still serving' <<<"$out" || fail "the server stopped serving: $out"
	stop_server
	;;
cross-client)
	# Defence: one PD per connection, so B's QP cannot use A's rkey.
	start_server
	rogue a
	rogue b
	out=$(rogue_do a "write own own")
	echo "control, A writes its own window: $out"
	[ "$out" = "wc: success" ] || fail "control: A's own write failed"
	out=$(rogue_do b "write $a_rkey $a_addr")
	echo "attack, B writes with A's live rkey $a_rkey at $a_addr: $out"
	grep -qE "$refused" <<<"$out" || fail "B's write with A's rkey was not refused"
	wait_for "$tmp/server.log" 'client 2: closed: QP error' 30 ||
		fail "the attacking connection was not torn down"
	out=$(rogue_do a "write own own")
	echo "A after the attack: $out"
	[ "$out" = "wc: success" ] || fail "A was hurt by B's attack"
	grep -q 'client 1: closed' "$tmp/server.log" && fail "A's connection was closed"
	stop_server
	;;
*)
	echo "usage: $0 stale-rkey|cross-client" >&2
	exit 2
	;;
esac
cat "$tmp/server.log"
echo PASS
