#!/usr/bin/env bash
# ibv_rc_pingpong (rdma-core's example) between two processes on one RDMA
# device: proves the device, its GID table and the verbs stack carry RC
# traffic before srdma's own tests rely on them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

dev=$(rdma_device)
gid=$(gid_index "$dev")
port=$(free_tcp_port)
iters=200
echo "device $dev, GID index $gid, TCP port $port, $iters iterations"

log=$(mktemp)
trap 'kill "$srv" 2>/dev/null || true; rm -f "$log"' EXIT
timeout 60 ibv_rc_pingpong -d "$dev" -g "$gid" -p "$port" -n "$iters" >"$log" 2>&1 &
srv=$!
wait_listen "$port" 20 || { cat "$log"; echo "FAIL: server did not listen" >&2; exit 1; }

rc=0
out=$(timeout 60 ibv_rc_pingpong -d "$dev" -g "$gid" -p "$port" -n "$iters" 127.0.0.1 2>&1) || rc=$?
srv_rc=0
wait "$srv" || srv_rc=$?
echo "--- client (exit $rc)"; echo "$out"
echo "--- server (exit $srv_rc)"; cat "$log"

[ "$rc" = 0 ] || { echo "FAIL: client exited $rc" >&2; exit 1; }
[ "$srv_rc" = 0 ] || { echo "FAIL: server exited $srv_rc" >&2; exit 1; }
grep -q "^$iters iters in" <<<"$out" || { echo "FAIL: client did not finish $iters iterations" >&2; exit 1; }
grep -q "^$iters iters in" "$log" || { echo "FAIL: server did not finish $iters iterations" >&2; exit 1; }
echo PASS
