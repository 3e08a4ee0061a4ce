#!/usr/bin/env bash
# srdma-client against a malicious server (tests/rdma/rogue-server), one
# misbehaviour per case. For each, the client must end on its own, within
# its deadlines, with a clear message and exit status 1: no crash, no hang,
# nothing leaked (the sanitized run checks that under ASan and LeakSanitizer).
# The case "good" is the control: the same server, playing fair, serves the
# same client (and answers its liveness probes).
# Usage: rogue-server.sh [CASE...] (default: all, one after another, each
# with a fresh rogue server; one line per case, its log when it fails).
# Environment: see harness.sh, and SRDMA_ROGUE_SERVER (the rogue-server
# program).
set -uo pipefail
. "$(dirname "$0")/harness.sh"

rogue_bin=${SRDMA_ROGUE_SERVER:?SRDMA_ROGUE_SERVER not set}
all_cases=(good echo-long echo-short ack-long ack-short wrong-imm no-imm early-reply
	double-reply error-long mtu-0 mtu-7 qpn-1 window-none window-huge rkey-0 gid-v6
	bye-tls bye-hello bye-binding bye-session error-session silent close-setup
	close-binding keyupdate-flood no-pong)
setup_ms=5000

# start_rogue: the rogue server for this case on $port (one connection;
# each case's server is gone before the next listens on the same port).
start_rogue() {
	"$rogue_bin" --mode "$case" --port "$port" --dev "$dev" --cert "$certs/server.pem" \
		--key "$certs/server.key" --life 90 >"$tmp/server.log" 2>&1 &
	srv_pid=$!
	echo "$srv_pid" >"$tmp/rogue.pid"
	wait_listen "$port" 30 || fail "rogue server ($case) did not listen"
}

# run_client SECONDS COMMANDS [ARGS...]: the client with COMMANDS on stdin;
# sets $out, $rc and $took (seconds).
run_client() {
	local limit=$1 cmds=$2 t0
	shift 2
	t0=$SECONDS
	out=$(printf "$cmds" | timeout "$limit" "$bin/srdma-client" --port "$port" \
		--dev "$dev" --ca "$certs/ca.pem" --timeout "$setup_ms" "$@" localhost 2>&1)
	rc=$?
	took=$((SECONDS - t0))
	echo "client (exit $rc after ${took} s):"
	echo "$out"
}

# fed_client SECONDS COMMANDS [ARGS...]: the client with COMMANDS on a
# stdin that stays open: it must end on its own (sets $out, $rc, $took).
fed_client() {
	local limit=$1 cmds=$2 t0 fd
	shift 2
	mkfifo "$tmp/fed.in"
	exec {fd}<>"$tmp/fed.in"
	printf "$cmds" >&"$fd"
	t0=$SECONDS
	timeout "$limit" "$bin/srdma-client" --port "$port" --dev "$dev" \
		--ca "$certs/ca.pem" --timeout "$setup_ms" "$@" localhost <"$tmp/fed.in" >"$tmp/out" 2>&1
	rc=$?
	took=$((SECONDS - t0))
	exec {fd}>&-
	out=$(cat "$tmp/out")
	echo "client (exit $rc after ${took} s):"
	echo "$out"
}

expect_fail() { # PATTERN: exit 1, and the message says it
	[ "$rc" = 1 ] || fail "client exited $rc, not 1 (124: hung; >128: crashed)"
	grep -qE -- "$1" <<<"$out" || fail "the client did not say /$1/"
}

rogue_said() { # PATTERN: a line the rogue printed
	wait_for "$tmp/server.log" "$1" 10 || fail "the server did not see /$1/"
}

# run_case CASE: one case, in a subshell of its own (fail exits it).
run_case() {
	case=$1
	[ "$case" = keyupdate-flood ] && small_loopback_mtu
	start_rogue
	case "$case" in
	good)
		# Control: everything works, and an idle client whose liveness
		# probes are answered stays connected through several probe periods.
		feeder g
		"$bin/srdma-client" --port "$port" --dev "$dev" --ca "$certs/ca.pem" --peer-timeout 1500 \
			localhost <"$tmp/g.in" >"$tmp/g.out" 2>&1 {g_fd}>&- &
		cpid=$!
		wait_for "$tmp/g.out" '^connected' 30 || fail "not connected: $(cat "$tmp/g.out")"
		sleep 4
		printf 'send hello\nwrite some bytes\nauto 2\nquit\n' >&"$g_fd"
		wait "$cpid"
		rc=$?
		out=$(cat "$tmp/g.out")
		echo "$out"
		[ "$rc" = 0 ] || fail "control: client exited $rc"
		grep -q '^echo: hello' <<<"$out" || fail "control: no echo"
		grep -q '^write: 10 bytes, server confirmed' <<<"$out" || fail "control: no write"
		grep -q '^auto: 2 rounds: 2/2 echoes ok, 2/2 writes ok' <<<"$out" || fail "control: auto"
		rogue_said 'client sent PING'
		rogue_said 'client said BYE'
		;;
	echo-long)
		run_client 30 'send hello\nquit\n'
		expect_fail "echo failed: the server's ECHO reply has 4096 bytes where 5 are due"
		rogue_said "client said ERROR 3: the server's ECHO reply has 4096 bytes"
		;;
	echo-short)
		run_client 30 'send hello\nquit\n'
		expect_fail "the server's ECHO reply has 1 bytes where 5 are due"
		;;
	ack-long)
		# The stack overflow of 71f92e8: a 4096-byte WRITE_ACK copied into a
		# 36-byte buffer on the client's stack.
		run_client 120 'write hello\nquit\n'
		expect_fail "write failed: the server's WRITE_ACK reply has 4096 bytes where 36 are due"
		;;
	ack-short)
		run_client 30 'write hello\nquit\n'
		expect_fail "the server's WRITE_ACK reply has 4 bytes where 36 are due"
		;;
	wrong-imm)
		run_client 30 'send hello\nquit\n'
		expect_fail 'a reply of kind unknown \(99\) where ECHO was due'
		;;
	no-imm)
		run_client 30 'send hello\nquit\n'
		expect_fail 'not a SEND with an immediate'
		;;
	early-reply)
		fed_client 30 ''
		expect_fail 'a message from the server that answers nothing'
		;;
	double-reply)
		fed_client 30 'send hello\n'
		expect_fail 'a second reply from the server|a message from the server that answers nothing'
		;;
	error-long)
		run_client 30 'quit\n'
		expect_fail 'the server refused the connection: "%s%n%x\\\\'"'"' \{"event":"closed"\} \[2J'
		# All of its 200 bytes, nothing more.
		grep -qE '~{100}$' <<<"$out" || fail "the text was cut"
		wait "$srv_pid"	# one connection each
		start_rogue
		run_client 30 'quit\n' --json
		expect_fail '^\{"event":"error","step":"peer refused","message":"\\"%s%n%x\\\\\\\\'
		;;
	mtu-0 | mtu-7 | qpn-1 | window-huge)
		run_client 30 'quit\n'
		expect_fail 'read control message failed: PARAMS: a field out of range'
		;;
	window-none)
		run_client 30 'quit\n'
		expect_fail "handshake failed: the peer's PARAMS lack a write window its HELLO offered"
		;;
	rkey-0)
		# The write fails at the client's QP; the server hears why (ERROR),
		# not a BYE that hides it.
		run_client 30 'write hello\nquit\n'
		expect_fail 'write failed: client QP failed: (remote access error|Work Request Flushed Error)'
		rogue_said 'client said ERROR 11: client QP failed'
		;;
	gid-v6)
		run_client 60 'quit\n'
		expect_fail 'failed'
		;;
	bye-tls | bye-hello)
		run_client 30 'quit\n'
		expect_fail 'handshake failed: the peer closed the connection \(BYE\) before setup finished'
		;;
	bye-binding)
		run_client 180 'quit\n'
		expect_fail 'peer binding failed: the peer closed the connection \(BYE\)'
		;;
	bye-session)
		run_client 30 'send hello\nquit\n'
		expect_fail 'echo failed: server said bye'
		;;
	error-session)
		run_client 30 'send hello\nquit\n'
		expect_fail 'echo failed: "%s%n%x'
		;;
	silent)
		run_client 30 'quit\n' --timeout 2000
		expect_fail 'read control message failed: no answer from the peer before the deadline'
		[ "$took" -le 15 ] || fail "the deadline did not hold"
		;;
	close-setup)
		run_client 30 'quit\n'
		expect_fail 'connection closed by the peer'
		;;
	close-binding)
		run_client 30 'quit\n'
		expect_fail 'peer binding failed: connection lost'
		grep -q 'refused' <<<"$out" && fail "a lost connection was called a refusal"
		;;
	keyupdate-flood)
		# The server floods TLS KeyUpdates and reads nothing: the client
		# must hang up, not spin answering into a full socket.
		fed_client 50 ''
		expect_fail 'does not read its control channel'
		;;
	no-pong)
		# A server that never answers a liveness probe (hung) is dropped.
		fed_client 30 '' --peer-timeout 1500
		expect_fail 'closed: server not responding'
		;;
	*)
		echo "usage: $0 [CASE...]; cases: ${all_cases[*]}" >&2
		exit 2
		;;
	esac
	kill "$srv_pid" 2>/dev/null
	wait "$srv_pid" 2>/dev/null
	srv_pid=
	[ -n "$lo_mtu" ] && ip link set lo mtu "$lo_mtu"
	lo_mtu=
	echo PASS
}

[ $# -gt 0 ] || set -- "${all_cases[@]}"
failed=()
root=$tmp
lo_mtu0=$(cat /sys/class/net/lo/mtu)
for c in "$@"; do
	mkdir -p "$root/$c"
	( tmp=$root/$c; run_case "$c" ) >"$root/$c.log" 2>&1
	rc=$?
	[ -s "$root/$c/rogue.pid" ] && kill -9 "$(cat "$root/$c/rogue.pid")" 2>/dev/null
	# (a case that failed half way may have left the loopback MTU changed)
	[ "$(cat /sys/class/net/lo/mtu)" = "$lo_mtu0" ] || ip link set lo mtu "$lo_mtu0"
	if [ "$rc" = 0 ]; then
		echo "PASS $c"
	else
		echo "FAIL $c (exit $rc):"
		sed 's/^/    /' "$root/$c.log"
		failed+=("$c")
	fi
done
echo "rogue server: $(($# - ${#failed[@]})) of $# cases passed${failed[*]:+; failed: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
