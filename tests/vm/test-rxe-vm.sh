#!/usr/bin/env bash
# Tests of tests/vm/rxe-vm itself. Each case boots real guests.
# Usage: test-rxe-vm.sh CASE, CASE one of: exit-status device streams timeout
#        hosts2
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
vm=$here/rxe-vm
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

case "${1:-}" in
exit-status)
	"$vm" -- false
	rc=$?
	echo "rxe-vm -- false: exit $rc"
	[ "$rc" = 1 ] || fail "expected exit 1"
	"$vm" -- sh -c 'exit 7'
	rc=$?
	echo "rxe-vm -- sh -c 'exit 7': exit $rc"
	[ "$rc" = 7 ] || fail "expected exit 7"
	;;
device)
	"$vm" -- sh -c 'ibv_devices; ibv_devinfo -d rxe0' >"$tmp/out"
	rc=$?
	cat "$tmp/out"
	[ "$rc" = 0 ] || fail "exit $rc"
	grep -qE '^ *rxe0 ' "$tmp/out" || fail "ibv_devices does not list rxe0"
	grep -q 'PORT_ACTIVE' "$tmp/out" || fail "rxe0 port is not PORT_ACTIVE"
	grep -q 'link_layer:.*Ethernet' "$tmp/out" || fail "rxe0 is not RoCE (link_layer Ethernet)"
	;;
streams)
	# stdout and stderr stay apart, the working directory is the caller's,
	# the environment comes along, and the share is writable.
	# The host's /tmp is visible (read) but guest writes there stay in
	# the guest.
	mkdir -p "$tmp/work"
	cd "$tmp/work" || exit 1
	echo host-side >"$tmp/outside"
	SRDMA_PROBE='a b$c' "$vm" -- sh -c \
		'echo "out:$PWD"; echo "err:$SRDMA_PROBE" >&2; echo left >file; printf "%s|" "$@";
		 echo; echo "read:$(cat ../outside)"; echo guest >../outside.guest' \
		sh 'x y' '' "z'q" >"$tmp/o" 2>"$tmp/e"
	rc=$?
	echo "--- stdout"; cat "$tmp/o"; echo; echo "--- stderr"; cat "$tmp/e"
	[ "$rc" = 0 ] || fail "exit $rc"
	grep -qx "out:$tmp/work" "$tmp/o" || fail "stdout lacks the working directory line"
	grep -qx "read:host-side" "$tmp/o" || fail "the host's /tmp is not visible in the guest"
	[ -e "$tmp/outside.guest" ] && fail "a guest write to /tmp outside the share reached the host"
	grep -q 'err:' "$tmp/o" && fail "stderr leaked into stdout"
	grep -qx 'err:a b$c' "$tmp/e" || fail "stderr lacks the environment line"
	grep -q "x y||z'q|" "$tmp/o" || fail "arguments were not passed through intact"
	[ "$(cat "$tmp/work/file" 2>/dev/null)" = left ] || fail "file written in the share did not come back"
	;;
timeout)
	start=$(date +%s)
	"$vm" --timeout 12 -- sleep 600 2>"$tmp/e"
	rc=$?
	took=$(($(date +%s) - start))
	cat "$tmp/e"
	echo "exit $rc after $took s"
	[ "$rc" = 124 ] || fail "expected exit 124 on timeout"
	grep -q 'timed out after 12 s' "$tmp/e" || fail "timeout not reported"
	[ "$took" -lt 60 ] || fail "QEMU was not killed at the timeout"
	pgrep -f "qemu-system-x86_64.*$tmp" >/dev/null && fail "QEMU still running"
	;;
hosts2)
	# Two guests, one link: ibv_rc_pingpong from the client guest to the
	# server guest over the QEMU socket network.
	"$vm" --hosts 2 -- bash -c '
		. "$0"
		gid=$(gid_index rxe0)
		if [ "$RXE_VM_ROLE" = server ]; then
			exec timeout 60 ibv_rc_pingpong -d rxe0 -g "$gid" -n 100
		else
			for i in $(seq 100); do
				timeout 60 ibv_rc_pingpong -d rxe0 -g "$gid" -n 100 "$RXE_VM_PEER_ADDR" && exit 0
				sleep 0.2
			done
			exit 1
		fi' "$here/../rdma/lib.sh" >"$tmp/o"
	rc=$?
	cat "$tmp/o"
	[ "$rc" = 0 ] || fail "exit $rc"
	[ "$(grep -c '100 iters in' "$tmp/o")" = 2 ] || fail "both sides must finish 100 iterations"
	grep -q 'remote address: .*GID ::ffff:10.77.0.2' "$tmp/o" || fail "server did not see the client guest's GID"
	;;
*)
	echo "usage: $0 exit-status|device|streams|timeout|hosts2" >&2
	exit 2
	;;
esac
echo PASS
