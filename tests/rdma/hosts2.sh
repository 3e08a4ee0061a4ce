#!/usr/bin/env bash
# Two hosts: srdma-server in one rxe-vm guest, srdma-client in the other,
# over the guests' own network (tests/vm/rxe-vm --hosts 2). The scenarios
# that depend on addressing: echo and write, mutual TLS, exporter PSN mode,
# reconnect across a server restart, and an observer on the link (a capture
# on the server guest's eth0): it reads an unsealed session's text in the
# RoCE frames (the control) and not a sealed session's (--seal).
#   hosts2.sh            on the host: boots the two guests (CTest runs this)
#   hosts2.sh guest DIR  in each guest (rxe-vm runs this; DIR is the share)
# Environment: SRDMA_BIN, SRDMA_TEST_CERTS (set by CTest).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
bin=${SRDMA_BIN:?SRDMA_BIN not set}
certs=${SRDMA_TEST_CERTS:?SRDMA_TEST_CERTS not set}
sniff=${SRDMA_SNIFF:?SRDMA_SNIFF not set}
# What the observer looks for: the text of an unsealed session, and of a
# sealed one.
plain_marker=PLAINTEXT-MARKER-5e1f
sealed_marker=SEALED-MARKER-c07a

if [ "${1:-}" != guest ]; then
	# The share must be outside /tmp (the guests keep their /tmp writes).
	run=$(mktemp -d "$bin/../hosts2.XXXXXX") || exit 1
	trap 'rm -rf "$run"' EXIT
	cd "$run" || exit 1
	"$here/../vm/rxe-vm" --hosts 2 --timeout 900 --share "$run" -- "$here/hosts2.sh" guest "$run"
	exit $?
fi

run=$2
fail() { echo "FAIL ($RXE_VM_ROLE): $*" >&2; touch "$run/done"; exit 1; }
# wait_file FILE SECONDS (wall clock: every fork is slow under TCG)
wait_file() {
	local end=$((SECONDS + $2))
	until [ -e "$1" ]; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}
wait_for() { # FILE PATTERN SECONDS
	local end=$((SECONDS + $3))
	until grep -qE "$2" "$1" 2>/dev/null; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.2
	done
}

if [ "$RXE_VM_ROLE" = server ]; then
	declare -A pid
	serve() { # NAME PORT ARGS...
		local name=$1 port=$2
		shift 2
		"$bin/srdma-server" --port "$port" --dev rxe0 --cert "$certs/server.pem" \
			--key "$certs/server.key" "$@" >>"$run/$name.log" 2>&1 &
		pid[$name]=$!
		wait_listen "$port" 60 || fail "$name server did not listen"
	}
	# The observer, first: everything that crosses the link from here on.
	"$sniff" "$RXE_VM_NETDEV" "$run/done" "$plain_marker" "$sealed_marker" >"$run/sniff.out" 2>&1 &
	sniff_pid=$!
	wait_for "$run/sniff.out" '^capturing' 60 || fail "the observer did not start: $(cat "$run/sniff.out")"
	serve plain 4433
	serve mtls 4434 --client-ca "$certs/ca.pem"
	serve exporter 4435 --psn-mode exporter
	serve sealed 4436 --seal
	touch "$run/ready"
	end=$((SECONDS + 700))
	while [ ! -e "$run/done" ] && [ "$SECONDS" -lt "$end" ]; do
		if [ -e "$run/restart" ]; then
			rm -f "$run/restart"
			kill -9 "${pid[plain]}"
			wait "${pid[plain]}" 2>/dev/null
			echo "--- killed and started again" >>"$run/plain.log"
			serve plain 4433
			touch "$run/restarted"
		fi
		sleep 0.2
	done
	rc=0
	touch "$run/done"	# (also when the wait above ran out)
	wait "$sniff_pid" || { echo "FAIL: the observer exited $?" >&2; rc=1; }
	echo "--- the observer on $RXE_VM_NETDEV"
	cat "$run/sniff.out"
	grep -Eq "^marker $plain_marker frames [1-9]" "$run/sniff.out" ||
		{ echo "FAIL: control: the observer did not read the unsealed session's text" >&2; rc=1; }
	grep -q "^marker $sealed_marker frames 0$" "$run/sniff.out" ||
		{ echo "FAIL: the observer read the sealed session's text" >&2; rc=1; }
	for name in plain mtls exporter sealed; do
		kill -TERM "${pid[$name]}"
		wait "${pid[$name]}" || { echo "FAIL: $name server exited $? after SIGTERM" >&2; rc=1; }
		echo "--- $name server log"
		cat "$run/$name.log"
	done
	exit $rc
fi

# The client guest.
wait_file "$run/ready" 300 || fail "the servers did not come up"
peer=$RXE_VM_PEER_ADDR
client() { # PORT ARGS...
	local port=$1
	shift
	timeout 120 "$bin/srdma-client" --port "$port" --dev rxe0 --ca "$certs/ca.pem" \
		--server-name localhost "$@" "$peer"
}

echo "== echo and write, $RXE_VM_ADDR -> $peer"
out=$(printf 'send hello across hosts\nwrite bytes across hosts\nsend %s\nwrite %s\nquit\n' \
	"$plain_marker" "$plain_marker" | client 4433 2>&1) || fail "echo and write: $out"
echo "$out"
grep -q "^connected to $peer:4433: TLSv1.3" <<<"$out" || fail "not connected to $peer:4433"
grep -q '^echo: hello across hosts' <<<"$out" || fail "no echo"
grep -q '^write: 18 bytes, server confirmed' <<<"$out" || fail "no confirmed write"

echo "== sealed (--seal), with the observer on the link"
out=$(printf 'send %s\nwrite %s\nauto 5\nquit\n' "$sealed_marker" "$sealed_marker" |
	client 4436 --seal 2>&1) || fail "sealed: $out"
echo "$out"
grep -q '^connected to .*sealed with aes-256-gcm' <<<"$out" && grep -q "^echo: $sealed_marker" <<<"$out" &&
	grep -q "^write: ${#sealed_marker} bytes, server confirmed" <<<"$out" &&
	grep -q '^auto: 5 rounds: 5/5 echoes ok, 5/5 writes ok' <<<"$out" || fail "sealed: $out"

echo "== mutual TLS"
out=$(printf 'send with a certificate\nquit\n' | client 4434 --cert "$certs/client.pem" \
	--key "$certs/client.key" 2>&1) || fail "mTLS: $out"
grep -q '^echo: with a certificate' <<<"$out" || fail "mTLS: no echo: $out"
out=$(echo quit | client 4434 2>&1) && fail "control: a client without a certificate got in: $out"
echo "without a certificate: $out"

echo "== exporter PSN mode"
out=$(printf 'send exporter\nquit\n' | client 4435 --psn-mode exporter 2>&1) || fail "exporter: $out"
grep -q '^connected to .*PSNs verified (exporter)' <<<"$out" && grep -q '^echo: exporter' <<<"$out" ||
	fail "exporter: $out"
out=$(echo quit | client 4435 2>&1) && fail "control: PSN modes that differ were accepted"
grep -q 'PSN mode mismatch' <<<"$out" || fail "control: no PSN mode reason: $out"

echo "== reconnect across a server restart"
# The FIFO in the guest's own /tmp: the 9p share cannot hold one.
gtmp=$(mktemp -d)
mkfifo "$gtmp/rc.in"
exec {rc_fd}<>"$gtmp/rc.in"
timeout 300 "$bin/srdma-client" --port 4433 --dev rxe0 --ca "$certs/ca.pem" --server-name localhost \
	--json --reconnect=120 "$peer" <"$gtmp/rc.in" >"$run/rc.out" 2>&1 {rc_fd}>&- &
rc_pid=$!
echo "auto 200" >&"$rc_fd"
wait_for "$run/rc.out" '"event":"echo"' 120 || fail "no rounds: $(cat "$run/rc.out")"
touch "$run/restart"
wait_for "$run/rc.out" '"event":"reconnected"' 240 || fail "no reconnect: $(cat "$run/rc.out")"
wait_for "$run/rc.out" '"event":"auto"' 240 || fail "auto did not finish: $(cat "$run/rc.out")"
echo "send after the restart" >&"$rc_fd"
wait_for "$run/rc.out" '"data":"after the restart"' 120 || fail "no echo after the restart"
echo quit >&"$rc_fd"
wait "$rc_pid" || fail "the client exited $?: $(cat "$run/rc.out")"
grep -E '"event":"(reconnect|auto|closed|error)|after the restart' "$run/rc.out"
line=$(grep '"event":"auto"' "$run/rc.out")
e=$(sed -E 's/.*"echoes_ok":([0-9]+).*/\1/' <<<"$line")
w=$(sed -E 's/.*"writes_ok":([0-9]+).*/\1/' <<<"$line")
f=$(sed -E 's/.*"failures":([0-9]+).*/\1/' <<<"$line")
[ $((e + w + f)) = 400 ] || fail "auto: $e + $w ok + $f failed != 2 x 200 rounds"
touch "$run/done"
echo PASS
